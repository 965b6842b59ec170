import { runnerTests } from './agent-runner-suite'

// Part 1 of the runner's end-to-end tests (test/agent-runner-suite.ts).
runnerTests(1)
