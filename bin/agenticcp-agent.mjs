#!/usr/bin/env node
// The runner's command. A production install (`npm ci --omit=dev` plus `npm run build`'s
// dist/) runs dist/agent.js; a development checkout, where tsx is installed, runs the
// TypeScript sources (src/agent/bin.ts), so an edit needs no rebuild.
import { existsSync } from 'node:fs'

const sources = new URL('../src/agent/bin.ts', import.meta.url)
const built = new URL('../dist/agent.js', import.meta.url)

let tsx
if (existsSync(sources)) tsx = await import('tsx/esm/api').catch(() => undefined)
if (tsx) {
  tsx.register()
  await import(sources.href)
} else if (existsSync(built)) {
  await import(built.href)
} else {
  process.stderr.write(
    'agenticcp-agent: no build found (dist/agent.js): run `npm run build`, or install tsx to run the sources\n',
  )
  process.exitCode = 1
}
