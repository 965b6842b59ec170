/**
 * The import rules of src/ (docs/architecture.md, "Layers"), checked by `npm run lint`.
 * Layers import only downward:
 *
 *   entry (server.ts, worker.ts) → app.ts → routes/, middleware/ → services/ → db/ → domain/, lib/ → env.ts
 *
 * Skipping a layer downward is fine (a route may read a db type); importing upward, or in
 * a circle, is not. The agent runner and the client ship to agents on their own: at run
 * time they take only each other and the domain, and only types from the server.
 */
const layers = {
  entry: '^src/(server|worker)\\.ts$',
  app: '^src/app\\.ts$',
  http: '^src/(routes|middleware)/',
  services: '^src/services/',
  db: '^src/db/',
  lib: '^src/lib/',
  domain: '^src/domain/',
  env: '^src/env\\.ts$',
  agentSide: '^src/(agent|client)/',
}

/** Everything a layer may not import: the layers above it (and the agent side). */
const above = (...names) => names.map((n) => layers[n]).join('|')

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'An import circle: two modules need each other, so neither can be read (or loaded) first.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'domain-imports-nothing',
      severity: 'error',
      comment: 'src/domain is the bottom layer: it imports nothing else from src/.',
      from: { path: layers.domain },
      to: { path: '^src/', pathNot: layers.domain },
    },
    {
      name: 'env-imports-nothing',
      severity: 'error',
      comment: 'src/env.ts reads settings; it imports nothing else from src/.',
      from: { path: layers.env },
      to: { path: '^src/', pathNot: layers.env },
    },
    {
      name: 'lib-upward',
      severity: 'error',
      comment: 'src/lib holds helpers that know nothing of the database, the services or HTTP routes.',
      from: { path: layers.lib },
      to: { path: above('entry', 'app', 'http', 'services', 'db', 'agentSide') },
    },
    {
      name: 'db-upward',
      severity: 'error',
      comment: 'src/db holds the schema and the statements; it never calls a service or a route.',
      from: { path: layers.db },
      to: { path: above('entry', 'app', 'http', 'services', 'agentSide') },
    },
    {
      name: 'services-upward',
      severity: 'error',
      comment: 'Services hold the rules and never see HTTP: no routes, middleware, app or entry points.',
      from: { path: layers.services },
      to: { path: above('entry', 'app', 'http', 'agentSide') },
    },
    {
      name: 'http-upward',
      severity: 'error',
      comment: 'Routes and middleware are built by the app, not the other way round.',
      from: { path: layers.http },
      to: { path: above('entry', 'app', 'agentSide') },
    },
    {
      name: 'app-upward',
      severity: 'error',
      comment: 'The app is built by the entry points and knows nothing of them.',
      from: { path: layers.app },
      to: { path: above('entry', 'agentSide') },
    },
    {
      name: 'agent-side-takes-types-only',
      severity: 'error',
      comment:
        'The runner and the client ship to agents: at run time they import only each other and src/domain; from the server, types only.',
      from: { path: layers.agentSide },
      to: { path: '^src/', pathNot: `${layers.agentSide}|${layers.domain}`, dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'src-not-to-tests-or-scripts',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|scripts)/' },
    },
    {
      name: 'src-not-to-dev-deps',
      severity: 'error',
      comment: 'A production install has no devDependencies: src/ may take only types from them.',
      from: { path: '^src/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Type-only imports count: a circle of types is still a circle for a reader.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.mjs', '.cjs', '.json', '.d.ts'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
}
