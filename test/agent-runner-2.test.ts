import { runnerTests } from './agent-runner-suite'

// Part 2 of the runner's end-to-end tests (test/agent-runner-suite.ts).
runnerTests(2)
