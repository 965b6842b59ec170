import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'

/**
 * A copy of wrangler.toml with a `[[hyperdrive]]` binding named HYPERDRIVE whose local
 * stand-in (`localConnectionString`) connects `wrangler dev` straight to `databaseUrl`,
 * written to `file` under .wrangler/ (git-ignored), for `wrangler dev -c file`. Used by
 * test/workers.test.ts and `npm run bench -- worker`.
 */
export function writeHyperdriveConfig(file: string, databaseUrl: string): void {
  const local = new URL(databaseUrl)
  local.password ||= 'unused' // wrangler wants one; trust auth ignores it
  mkdirSync('.wrangler', { recursive: true })
  // `main` is relative to the config file, which sits one level down.
  const base = readFileSync('wrangler.toml', 'utf8').replace(/^main = "src\//m, 'main = "../src/')
  writeFileSync(
    file,
    `${base}
[[hyperdrive]]
binding = "HYPERDRIVE"
id = "00000000000000000000000000000000"
localConnectionString = "${local.toString()}"
`,
  )
}
