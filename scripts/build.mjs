/**
 * `npm run build`: the server, the migrator, the token tool and the agent runner as plain
 * JavaScript in dist/ (server.js, migrate.js, token.js, agent.js, with shared chunks), for
 * `node dist/server.js` on a production install (`npm ci --omit=dev`) without tsx.
 * Packages stay in node_modules (PGlite's wasm and swagger-ui-dist's files are read from
 * there); only our own code, and small JSON files it imports, are bundled. drizzle/ is
 * read from disk beside dist/. The Worker keeps its own build (wrangler).
 */
import { rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { build } from 'esbuild'

/** JSON that our code imports from a package is inlined: Node would want an import attribute. */
const inlineJson = {
  name: 'inline-package-json',
  setup(b) {
    b.onResolve({ filter: /^[^./].*\.json$/ }, (args) => ({
      path: createRequire(join(args.resolveDir, 'noop.js')).resolve(args.path),
    }))
  },
}

rmSync('dist', { recursive: true, force: true })
const result = await build({
  entryPoints: {
    server: 'src/server.ts',
    migrate: 'scripts/migrate.ts',
    token: 'scripts/token.ts',
    agent: 'src/agent/bin.ts',
  },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20.12',
  packages: 'external',
  plugins: [inlineJson],
  sourcemap: true,
  metafile: true,
  logLevel: 'warning',
})
const outputs = Object.entries(result.metafile.outputs).filter(([file]) => file.endsWith('.js'))
const bytes = outputs.reduce((sum, [, o]) => sum + o.bytes, 0)
console.log(`dist/: ${outputs.length} files, ${(bytes / 1024).toFixed(0)} KiB of JavaScript`)
