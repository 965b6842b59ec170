/**
 * The `agenticcp-agent` command's entry: runs main() and exits with its code. Built to
 * dist/agent.js; bin/agenticcp-agent.mjs loads the build, or these sources through tsx in a
 * development checkout.
 */
import { main } from './cli'

try {
  process.exitCode = await main(process.argv.slice(2))
} catch (err) {
  process.stderr.write(`agenticcp-agent: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exitCode = 1
}
// Timers of tasks given up on must not keep a stopped runner alive.
setTimeout(() => process.exit(), 100).unref()
