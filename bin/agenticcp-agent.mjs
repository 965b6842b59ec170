#!/usr/bin/env node
// The runner's command (src/agent/cli.ts), run from the TypeScript sources through tsx.
import { register } from 'tsx/esm/api'

register()
const { main } = await import('../src/agent/cli.ts')
try {
  process.exitCode = await main(process.argv.slice(2))
} catch (err) {
  process.stderr.write(`agenticcp-agent: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exitCode = 1
}
// Timers of tasks given up on must not keep a stopped runner alive.
setTimeout(() => process.exit(), 100).unref()
