/**
 * The deployment files under deploy/ (walkthrough: docs/deploy.md).
 *
 * Kubernetes (deploy/k8s/*.yaml): every document is checked against its Kubernetes schema
 * (kubernetes-models), and fields the API does not know are refused as `kubectl apply`
 * refuses them (the TypeScript types of the same models, through excess-property checks);
 * a kind without a model fails. Then the properties a working deploy depends on: probe
 * paths and ports, grace periods against the server's shutdown and the runner's drain,
 * the Secrets the docs tell you to create, no secret value in the repository.
 *
 * systemd (deploy/systemd/): `systemd-analyze verify` on the units where it is installed,
 * and the runner unit stops by draining (KillMode=mixed, TimeoutStopSec past the drain).
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { DaemonSet, type IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet'
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1/Deployment'
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet'
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler'
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import { type IPodDisruptionBudget, PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap'
import type { IContainer } from 'kubernetes-models/v1/Container'
import { Namespace } from 'kubernetes-models/v1/Namespace'
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec'
import { Secret } from 'kubernetes-models/v1/Secret'
import { type IService, Service } from 'kubernetes-models/v1/Service'
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'
import { parseAllDocuments } from 'yaml'

const root = resolve(import.meta.dirname, '..')
const k8sDir = join(root, 'deploy/k8s')
const systemdDir = join(root, 'deploy/systemd')
const docsPath = join(root, 'docs/deploy.md')

/** The probe paths (docs/architecture.md) and the server's port. */
const LIVENESS = '/api/v1/health/liveness'
const READINESS = '/api/v1/health/readiness'
const PORT = 8000
/** The server exits at most this long after SIGTERM (src/server.ts forces it). */
const SERVER_SHUTDOWN_SECONDS = 10
/** The runner's defaults (src/agent/cli.ts), and how long it takes, after stopping its tasks, to report them. */
const DEFAULT_DRAIN_SECONDS = 600
const DEFAULT_CANCEL_GRACE_SECONDS = 10
const STOP_REPORT_SECONDS = 10
/** The image's user (Dockerfile). */
const IMAGE_UID = 1000

// -- Kubernetes ------------------------------------------------------------------------------

interface ModelClass {
  new (data: never): { validate(): void }
}
/** apiVersion/kind → model (the schema) and the module whose `I<Kind>` type is the same schema in TypeScript. */
const models: Record<string, { model: ModelClass; module: string }> = {
  'v1/Namespace': { model: Namespace, module: 'kubernetes-models/v1/Namespace' },
  'v1/Service': { model: Service, module: 'kubernetes-models/v1/Service' },
  'v1/ServiceAccount': { model: ServiceAccount, module: 'kubernetes-models/v1/ServiceAccount' },
  'v1/ConfigMap': { model: ConfigMap, module: 'kubernetes-models/v1/ConfigMap' },
  'v1/Secret': { model: Secret, module: 'kubernetes-models/v1/Secret' },
  'apps/v1/Deployment': { model: Deployment, module: 'kubernetes-models/apps/v1/Deployment' },
  'apps/v1/DaemonSet': { model: DaemonSet, module: 'kubernetes-models/apps/v1/DaemonSet' },
  'apps/v1/StatefulSet': { model: StatefulSet, module: 'kubernetes-models/apps/v1/StatefulSet' },
  'policy/v1/PodDisruptionBudget': {
    model: PodDisruptionBudget,
    module: 'kubernetes-models/policy/v1/PodDisruptionBudget',
  },
  'networking.k8s.io/v1/Ingress': { model: Ingress, module: 'kubernetes-models/networking.k8s.io/v1/Ingress' },
  'networking.k8s.io/v1/NetworkPolicy': {
    model: NetworkPolicy,
    module: 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy',
  },
  'autoscaling/v2/HorizontalPodAutoscaler': {
    model: HorizontalPodAutoscaler,
    module: 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler',
  },
}
const KUSTOMIZATION = 'kustomize.config.k8s.io/v1beta1/Kustomization'

interface Manifest {
  file: string
  /** apiVersion/kind */
  type: string
  kind: string
  name: string
  namespace: string | undefined
  object: Record<string, unknown>
}

function yamlFiles(): string[] {
  return readdirSync(k8sDir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
}

function loadManifests(): Manifest[] {
  return yamlFiles().flatMap((file) => parseManifests(file, readFileSync(join(k8sDir, file), 'utf8')))
}

/** The complete objects (apiVersion and kind) in docs/deploy.md's ```yaml blocks. */
function docsManifests(): Manifest[] {
  const text = readFileSync(docsPath, 'utf8')
  return [...text.matchAll(/^```ya?ml\n([\s\S]*?)^```/gm)]
    .flatMap((m, i) => parseManifests(`docs/deploy.md (yaml block ${i + 1})`, m[1] ?? ''))
    .filter((m) => m.type !== 'undefined/undefined')
}

/** Every non-empty YAML document of `text`; a YAML error or warning throws. */
function parseManifests(file: string, text: string): Manifest[] {
  const out: Manifest[] = []
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length || doc.warnings.length)
      throw new Error(`${file}: ${[...doc.errors, ...doc.warnings].map((e) => e.message).join('; ')}`)
    const object: unknown = doc.toJS()
    if (object === null || object === undefined) continue // an empty document, as kubectl skips it
    if (typeof object !== 'object' || Array.isArray(object)) throw new Error(`${file}: a document is not a mapping`)
    const o = object as Record<string, unknown>
    const meta = (o.metadata ?? {}) as { name?: string; namespace?: string }
    out.push({
      file,
      type: `${String(o.apiVersion)}/${String(o.kind)}`,
      kind: String(o.kind),
      name: String(meta.name ?? ''),
      namespace: meta.namespace,
      object: o,
    })
  }
  return out
}

function must<T>(value: T | undefined | null, what: string): T {
  if (value === undefined || value === null) throw new Error(`missing: ${what}`)
  return value
}

/**
 * Unknown fields, as the API server's strict field validation (kubectl's default) reports
 * them: each object becomes a typed constant `const o: I<Kind> = {…}` and TypeScript's
 * excess-property check names any field the schema does not have, at any depth.
 */
function unknownFields(manifests: Manifest[]): string[] {
  const file = join(k8sDir, '__manifests__.ts')
  const lines: string[] = []
  const spans: { from: number; to: number; m: Manifest }[] = []
  manifests.forEach((m, i) => {
    const entry = models[m.type]
    if (!entry) return
    lines.push(`import type { I${m.kind} as T${i} } from '${entry.module}'`)
    const from = lines.length
    lines.push(...`export const o${i}: T${i} = ${JSON.stringify(m.object, null, 1)}`.split('\n'))
    spans.push({ from, to: lines.length, m })
  })
  const source = lines.join('\n')
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
    lib: ['lib.es5.d.ts'],
  }
  const host = ts.createCompilerHost(options)
  const getSourceFile = host.getSourceFile.bind(host)
  const fileExists = host.fileExists.bind(host)
  host.getSourceFile = (name, language, ...rest) =>
    name === file ? ts.createSourceFile(name, source, language, true) : getSourceFile(name, language, ...rest)
  host.fileExists = (name) => name === file || fileExists(name)
  const program = ts.createProgram([file], options, host)
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n').split('\n').at(-1)
    if (d.file?.fileName !== file || d.start === undefined) return String(message)
    const line = d.file.getLineAndCharacterOfPosition(d.start).line
    const span = spans.find((s) => line >= s.from && line < s.to)
    const where = span ? `${span.m.file} ${span.m.kind}/${span.m.name}` : 'deploy/k8s'
    return `${where}: ${message} (at ${lines[line]?.trim()})`
  })
}

/** Secrets the docs create: `kubectl … create secret generic NAME --from-literal=KEY=… --from-file=KEY=…`. */
function documentedSecrets(): Map<string, Set<string>> {
  const text = readFileSync(docsPath, 'utf8').replace(/\\\n/g, ' ')
  const secrets = new Map<string, Set<string>>()
  for (const line of text.split('\n')) {
    const m = /kubectl\b.*\bcreate secret generic ([a-z0-9.-]+)(.*)$/.exec(line)
    if (!m?.[1]) continue
    const keys = secrets.get(m[1]) ?? new Set<string>()
    for (const k of (m[2] ?? '').matchAll(/--from-(?:literal|file)=([A-Za-z0-9_.-]+)=/g)) if (k[1]) keys.add(k[1])
    secrets.set(m[1], keys)
  }
  return secrets
}

type Workload = Manifest & { pod: IPodSpec }

function podSpec(m: Manifest): IPodSpec | undefined {
  const spec = m.object.spec as { template?: { spec?: IPodSpec } } | undefined
  return spec?.template?.spec
}

function envValue(c: IContainer, name: string): string | undefined {
  return c.env?.find((e) => e.name === name)?.value
}

/** A flag's value in a container's args (or command), else its AGENTICCP_ variable. */
function runnerSetting(c: IContainer, flag: string): string | undefined {
  const argv = [...(c.command ?? []), ...(c.args ?? [])]
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === `--${flag}`) return argv[i + 1]
    if (argv[i]?.startsWith(`--${flag}=`)) return argv[i]?.slice(flag.length + 3)
  }
  return envValue(c, `AGENTICCP_${flag.toUpperCase().replace(/-/g, '_')}`)
}

/** A container port (a number, or a name of one of the container's ports) as a number. */
function portNumber(c: IContainer, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port
  return c.ports?.find((p) => p.name === port)?.containerPort
}

/** The seconds of a `sleep N` preStop hook (0 without one). */
function preStopSleep(c: IContainer): number {
  const command = c.lifecycle?.preStop?.exec?.command ?? []
  const text = command.join(' ')
  const m = /\bsleep\s+(\d+)\b/.exec(text)
  return m ? Number(m[1]) : 0
}

function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined) {
  if (!selector || Object.keys(selector).length === 0) return false
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v)
}

const manifests = loadManifests()
const docsObjects = docsManifests()
const byType = (type: string) => manifests.filter((m) => m.type === type)
const withPods = (list: Manifest[]): Workload[] =>
  list.flatMap((m) => {
    const pod = podSpec(m)
    return pod && m.kind !== 'Kustomization' ? [{ ...m, pod }] : []
  })
/** The workloads in deploy/k8s and the complete ones the docs show (the StatefulSet alternative). */
const workloads = [...withPods(manifests), ...withPods(docsObjects)]
const allContainers = (pod: IPodSpec) => [...(pod.initContainers ?? []), ...pod.containers]

const server = must(
  byType('apps/v1/Deployment').find((m) => m.name === 'agenticcp'),
  'the Deployment agenticcp',
)
const serverDeployment = server.object as unknown as IDeployment
const serverPod = must(podSpec(server), 'the server pod spec')
const serverContainer = must(serverPod.containers[0], 'the server container')
const runner = must(
  byType('apps/v1/DaemonSet').find((m) => m.name === 'agenticcp-runner'),
  'the DaemonSet agenticcp-runner',
)
const runnerDaemonSet = runner.object as unknown as IDaemonSet
const runnerPod = must(podSpec(runner), 'the runner pod spec')
const runnerContainer = must(
  runnerPod.containers.find((c) => [...(c.command ?? []), ...(c.args ?? [])].includes('run')),
  'the runner container (agenticcp-agent run)',
)
const service = must(
  byType('v1/Service').find((m) => m.name === 'agenticcp'),
  'the Service agenticcp',
).object as unknown as IService

describe('deploy/k8s: schemas', () => {
  it('has manifests, each a known kind', () => {
    expect(yamlFiles().length).toBeGreaterThan(0)
    for (const m of manifests) {
      const known = m.type in models || (m.type === KUSTOMIZATION && m.file === 'kustomization.yaml')
      expect(known, `${m.file}: ${m.type} has no Kubernetes model to validate it against`).toBe(true)
    }
  })

  it("validates every object against its Kubernetes schema (the docs' complete manifests too)", () => {
    expect(docsObjects.map((m) => m.type)).toContain('apps/v1/StatefulSet')
    for (const m of docsObjects) expect(m.type in models, `${m.file}: ${m.type} has no model`).toBe(true)
    for (const m of [...manifests, ...docsObjects]) {
      const entry = models[m.type]
      if (!entry) continue // a Kustomization; every other kind failed the test above
      expect(() => new entry.model(m.object as never).validate(), `${m.file} ${m.kind}/${m.name}`).not.toThrow()
      expect(m.name, `${m.file}: a ${m.kind} without metadata.name`).not.toBe('')
    }
  })

  it('has no field the Kubernetes API does not know (strict field validation)', () => {
    expect(unknownFields([...manifests, ...docsObjects])).toEqual([])
  })

  it('reads the same in YAML 1.1 (Kubernetes) as in YAML 1.2: no octal, yes/no or on/off surprises', () => {
    for (const file of yamlFiles()) {
      const text = readFileSync(join(k8sDir, file), 'utf8')
      const v12 = parseAllDocuments(text).map((d) => d.toJS())
      const v11 = parseAllDocuments(text, { version: '1.1' }).map((d) => d.toJS())
      expect(v11, file).toEqual(v12)
    }
  })

  it('kustomization.yaml lists every manifest, and no Secret or example', () => {
    const k = must(byType(KUSTOMIZATION)[0], 'kustomization.yaml').object as { resources?: string[] }
    const expected = yamlFiles().filter((f) => f !== 'kustomization.yaml' && !/\.example\.ya?ml$/.test(f))
    expect([...(k.resources ?? [])].sort()).toEqual(expected)
    expect(Object.keys(k).filter((key) => /generator/i.test(key))).toEqual([])
  })

  it('puts everything in one declared namespace', () => {
    const namespaces = byType('v1/Namespace').map((m) => m.name)
    expect(namespaces).toEqual(['agenticcp'])
    for (const m of manifests.filter((m) => m.type in models && m.kind !== 'Namespace'))
      expect(m.namespace, `${m.file} ${m.kind}/${m.name}`).toBe('agenticcp')
  })
})

describe('deploy/k8s: the server', () => {
  it('runs several replicas whose selector matches their pods', () => {
    expect(serverDeployment.spec?.replicas).toBeGreaterThanOrEqual(2)
    expect(selects(serverDeployment.spec?.selector.matchLabels, serverDeployment.spec?.template.metadata?.labels)).toBe(
      true,
    )
  })

  it('probes the seed paths on port 8000', () => {
    const c = serverContainer
    expect(portNumber(c, c.ports?.[0]?.containerPort)).toBe(PORT)
    const port = envValue(c, 'PORT')
    if (port !== undefined) expect(Number(port)).toBe(PORT)
    const liveness = must(c.livenessProbe?.httpGet, 'livenessProbe.httpGet')
    const readiness = must(c.readinessProbe?.httpGet, 'readinessProbe.httpGet')
    expect(liveness.path).toBe(LIVENESS)
    expect(readiness.path).toBe(READINESS)
    expect(portNumber(c, liveness.port)).toBe(PORT)
    expect(portNumber(c, readiness.port)).toBe(PORT)
    if (c.startupProbe) {
      // Liveness-style: a start waiting on migrations is slow, not broken.
      expect(c.startupProbe.httpGet?.path).toBe(LIVENESS)
      expect(portNumber(c, c.startupProbe.httpGet?.port)).toBe(PORT)
    }
  })

  it('is reached through the Service on port 8000', () => {
    expect(selects(service.spec?.selector, serverDeployment.spec?.template.metadata?.labels)).toBe(true)
    const ports = must(service.spec?.ports, 'Service ports')
    expect(ports.length).toBeGreaterThan(0)
    for (const p of ports) expect(portNumber(serverContainer, p.targetPort ?? p.port)).toBe(PORT)
  })

  it('outlives its preStop sleep and its own shutdown before SIGKILL', () => {
    const sleep = preStopSleep(serverContainer)
    expect(sleep, 'a preStop sleep lets the endpoint leave the Service before SIGTERM').toBeGreaterThan(0)
    const grace = serverPod.terminationGracePeriodSeconds ?? 30
    expect(grace).toBeGreaterThan(sleep + SERVER_SHUTDOWN_SECONDS)
  })

  it('runs as the image user on a read-only root, with DATA_DIR on a volume', () => {
    const pod = serverPod.securityContext
    const c = serverContainer.securityContext
    expect(c?.runAsNonRoot ?? pod?.runAsNonRoot).toBe(true)
    expect(c?.runAsUser ?? pod?.runAsUser).toBe(IMAGE_UID)
    expect(c?.readOnlyRootFilesystem).toBe(true)
    expect(c?.allowPrivilegeEscalation).toBe(false)
    const dataDir = envValue(serverContainer, 'DATA_DIR') ?? '/data'
    expect(serverContainer.volumeMounts?.map((v) => v.mountPath)).toContain(dataDir)
  })

  it('takes its production settings from the Secret', () => {
    expect(envValue(serverContainer, 'ENVIRONMENT')).toBe('production')
    for (const name of ['DATABASE_URL', 'SECRET_KEY']) {
      const ref = serverContainer.env?.find((e) => e.name === name)?.valueFrom?.secretKeyRef
      expect(ref, `${name} from a secretKeyRef`).toBeDefined()
      expect(ref?.optional ?? false, `${name} is required`).toBe(false)
    }
  })

  it('keeps a server up through a node drain, and lets the drain finish', () => {
    const pdbs = byType('policy/v1/PodDisruptionBudget').map((m) => m.object as unknown as IPodDisruptionBudget)
    const labels = serverDeployment.spec?.template.metadata?.labels
    const pdb = must(
      pdbs.find((p) => selects(p.spec?.selector?.matchLabels, labels)),
      'a PodDisruptionBudget for the server',
    )
    const replicas = serverDeployment.spec?.replicas ?? 1
    const minAvailable = pdb.spec?.minAvailable
    expect(typeof minAvailable).toBe('number')
    expect(minAvailable).toBeGreaterThanOrEqual(1)
    expect(minAvailable).toBeLessThan(replicas)
  })
})

describe('deploy/k8s: the runner', () => {
  const c = runnerContainer
  const volumeOf = (path: string) => {
    const mount = must(
      c.volumeMounts?.find((v) => path === v.mountPath || path.startsWith(`${v.mountPath.replace(/\/$/, '')}/`)),
      `a volume mounted at ${path}`,
    )
    return {
      mount,
      volume: must(
        runnerPod.volumes?.find((v) => v.name === mount.name),
        `volume ${mount.name}`,
      ),
    }
  }

  it('lets a drain finish before SIGKILL: grace > --drain-timeout + --cancel-grace + reporting', () => {
    const drain = Number(runnerSetting(c, 'drain-timeout') ?? DEFAULT_DRAIN_SECONDS)
    const cancelGrace = Number(runnerSetting(c, 'cancel-grace') ?? DEFAULT_CANCEL_GRACE_SECONDS)
    expect(Number.isInteger(drain) && Number.isInteger(cancelGrace)).toBe(true)
    const grace = must(runnerPod.terminationGracePeriodSeconds, 'terminationGracePeriodSeconds')
    expect(grace).toBeGreaterThan(drain)
    expect(grace).toBeGreaterThan(drain + cancelGrace + STOP_REPORT_SECONDS)
  })

  it('never runs an old and a new runner on one node (they would share one identity)', () => {
    const strategy = runnerDaemonSet.spec?.updateStrategy
    expect(strategy?.rollingUpdate?.maxSurge ?? 0).toBe(0)
  })

  it('keeps its identity on the node, in a directory its user owns', () => {
    const stateDir = must(runnerSetting(c, 'state-dir'), '--state-dir')
    const { volume } = volumeOf(stateDir)
    expect(volume.hostPath?.path).toBeTruthy()
    const uid = c.securityContext?.runAsUser ?? runnerPod.securityContext?.runAsUser
    expect(uid).toBe(IMAGE_UID)
    expect(c.securityContext?.runAsNonRoot ?? runnerPod.securityContext?.runAsNonRoot).toBe(true)
    // A hostPath directory starts root-owned: an init container hands it to the runner's uid.
    const init = must(
      runnerPod.initContainers?.find((i) => i.volumeMounts?.some((v) => v.name === volume.name)),
      'an init container preparing the state directory',
    )
    const script = [...(init.command ?? []), ...(init.args ?? [])].join(' ')
    expect(script).toContain(`chown ${uid}:`)
    expect(script).toContain(init.volumeMounts?.find((v) => v.name === volume.name)?.mountPath)
  })

  it('reads its registration token from the Secret, as a file its user can read', () => {
    const tokenFile = must(runnerSetting(c, 'token-file'), '--token-file')
    expect(runnerSetting(c, 'token')).toBeUndefined()
    const { mount, volume } = volumeOf(tokenFile)
    const secret = must(volume.secret, `volume ${volume.name} is a Secret`)
    expect(secret.secretName).toBe('agenticcp-registration')
    const relative = tokenFile.slice(mount.mountPath.replace(/\/$/, '').length + 1)
    const item = secret.items?.find((i) => i.path === relative)
    const key = item ? item.key : relative
    expect(documentedSecrets().get('agenticcp-registration')).toContain(key)
    const mode = item?.mode ?? secret.defaultMode ?? 0o644
    const groupReadable = (mode & 0o040) !== 0 && runnerPod.securityContext?.fsGroup === IMAGE_UID
    expect((mode & 0o004) !== 0 || groupReadable, `mode ${mode.toString(8)} readable by uid ${IMAGE_UID}`).toBe(true)
  })

  it("names each runner after its node and points it at the server's Service", () => {
    const name = c.env?.find((e) => e.name === 'AGENTICCP_NAME')
    expect(name?.valueFrom?.fieldRef?.fieldPath).toBe('spec.nodeName')
    const url = new URL(must(runnerSetting(c, 'url'), '--url / AGENTICCP_URL'))
    expect(url.hostname.split('.').slice(0, 3)).toEqual(['agenticcp', 'agenticcp', 'svc'])
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80
    expect(service.spec?.ports?.map((p) => p.port)).toContain(port)
  })

  it('gets no Service variables, which share its AGENTICCP_ prefix', () => {
    expect(runnerPod.enableServiceLinks).toBe(false)
  })
})

describe('deploy/k8s: secrets', () => {
  it('refers only to Secrets (and keys) the docs tell you to create', () => {
    const documented = documentedSecrets()
    expect([...documented.keys()].sort()).toEqual(['agenticcp', 'agenticcp-registration'])
    for (const w of workloads) {
      for (const container of allContainers(w.pod)) {
        for (const e of container.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef
          if (!ref) continue
          const keys = documented.get(ref.name ?? '')
          expect(keys, `${w.file}: ${e.name} from Secret ${ref.name}`).toBeDefined()
          if (!ref.optional) expect(keys, `${w.file}: ${e.name}: key ${ref.key} in the docs`).toContain(ref.key)
        }
        for (const from of container.envFrom ?? [])
          if (from.secretRef) expect(documented.has(from.secretRef.name ?? ''), `${w.file} envFrom`).toBe(true)
      }
      for (const v of w.pod.volumes ?? []) {
        const names = [v.secret?.secretName, ...(v.projected?.sources ?? []).map((s) => s.secret?.name)].filter(
          (n): n is string => n !== undefined,
        )
        for (const n of names) expect(documented.has(n), `${w.file}: volume ${v.name} Secret ${n}`).toBe(true)
      }
    }
  })

  it('holds no secret value', () => {
    for (const m of manifests) {
      if (m.kind === 'Secret') expect(m.file, 'a Secret only in a *.example.yaml').toMatch(/\.example\.ya?ml$/)
    }
    for (const w of workloads) {
      for (const container of allContainers(w.pod)) {
        for (const e of container.env ?? []) {
          if (/SECRET|PASSWORD|TOKEN|KEY|DATABASE_URL|REDIS_URL/i.test(e.name) && !/_FILE$/.test(e.name))
            expect(e.value, `${w.file}: ${e.name} has a literal value`).toBeUndefined()
        }
        expect(runnerSetting(container, 'token'), `${w.file}: a literal --token`).toBeUndefined()
      }
    }
    for (const file of yamlFiles()) {
      const text = readFileSync(join(k8sDir, file), 'utf8')
      expect(text, file).not.toMatch(/acpr_[A-Za-z0-9_-]{8,}/)
      expect(text, file).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/) // a JWT
      expect(text, file).not.toMatch(/-----BEGIN [A-Z ]*PRIVATE KEY-----/)
      expect(text, file).not.toMatch(/(postgres(ql)?|redis|rediss):\/\/[^:\s/@]+:(?!<)[^@\s]+@/) // a password in a URL
    }
  })

  it('deploys this release: every image is agenticcp-agent:<package.json version>', () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }
    for (const w of workloads)
      for (const container of allContainers(w.pod))
        expect(container.image, `${w.file} ${container.name}`).toBe(`agenticcp-agent:${version}`)
  })
})

// -- systemd ---------------------------------------------------------------------------------

type Unit = Map<string, Map<string, string[]>>

/** A unit file: section → key → every value given (in order), continuation lines joined. */
function parseUnit(path: string): Unit {
  const unit: Unit = new Map()
  let section = ''
  const text = readFileSync(path, 'utf8').replace(/\\\n/g, ' ')
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (!line || line.startsWith('#') || line.startsWith(';')) continue
    const s = /^\[(.+)\]$/.exec(line)
    if (s?.[1]) {
      section = s[1]
      if (!unit.has(section)) unit.set(section, new Map())
      continue
    }
    const eq = line.indexOf('=')
    if (eq < 0) throw new Error(`${path}: not key=value: ${line}`)
    const values = must(unit.get(section), `a section before ${line}`)
    const key = line.slice(0, eq).trim()
    values.set(key, [...(values.get(key) ?? []), line.slice(eq + 1).trim()])
  }
  return unit
}

function unitValue(unit: Unit, section: string, key: string): string | undefined {
  return unit.get(section)?.get(key)?.at(-1)
}

/** A systemd time span in seconds: "660", "660s", "11min", "11min 30s", "1h". */
function seconds(span: string): number {
  const units: Record<string, number> = { '': 1, s: 1, sec: 1, m: 60, min: 60, h: 3600, hr: 3600, ms: 0.001 }
  let total = 0
  for (const m of span.matchAll(/(\d+(?:\.\d+)?)\s*([a-z]*)/g)) {
    const unit = units[m[2] ?? '']
    if (unit === undefined) throw new Error(`time span unit ${m[2]} in ${span}`)
    total += Number(m[1]) * unit
  }
  return total
}

/** `KEY=value` lines of an env file. */
function envFile(path: string): Map<string, string> {
  const env = new Map<string, string>()
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim())
    if (m?.[1]) env.set(m[1], m[2] ?? '')
  }
  return env
}

function flag(command: string, name: string): string | undefined {
  const m = new RegExp(`(?:^|\\s)--${name}(?:=|\\s+)(\\S+)`).exec(command)
  return m?.[1]
}

const serverUnit = parseUnit(join(systemdDir, 'agenticcp.service'))
const runnerUnit = parseUnit(join(systemdDir, 'agenticcp-runner.service'))
const systemdAnalyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p))
if (!systemdAnalyze) console.warn('skipped: systemd-analyze verify: systemd-analyze not found in /usr/bin or /bin')

describe('deploy/systemd', () => {
  it.skipIf(!systemdAnalyze)('passes systemd-analyze verify', () => {
    const dir = mkdtempSync(join(tmpdir(), 'acp-units-'))
    try {
      const units = readdirSync(systemdDir).filter((f) => f.endsWith('.service'))
      expect(units.sort()).toEqual(['agenticcp-runner.service', 'agenticcp.service'])
      for (const u of units) {
        let text = readFileSync(join(systemdDir, u), 'utf8')
        // verify checks that ExecStart's program exists: use this machine's node where the
        // units' /usr/bin/node (NodeSource's path) is not installed.
        if (!existsSync('/usr/bin/node')) text = text.replaceAll('/usr/bin/node', process.execPath)
        writeFileSync(join(dir, u), text)
      }
      const run = spawnSync(must(systemdAnalyze, 'systemd-analyze'), ['verify', ...units.map((u) => join(dir, u))], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { ...process.env, SYSTEMD_LOG_COLOR: '0', SYSTEMD_PAGER: 'cat' },
      })
      // Unknown keys and unparsable values are only warnings (exit 0): any line about our
      // units fails the test.
      const about = `${run.stdout}\n${run.stderr}`
        .split('\n')
        .filter((l) => l.includes(dir) || units.some((u) => l.includes(u)))
      expect(about).toEqual([])
      expect(run.status, run.stderr).toBe(0)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('stops the runner by draining it: SIGTERM to the runner alone, SIGKILL only after the drain', () => {
    const S = 'Service'
    expect(unitValue(runnerUnit, S, 'KillMode')).toBe('mixed')
    expect(unitValue(runnerUnit, S, 'KillSignal') ?? 'SIGTERM').toBe('SIGTERM')
    const exec = must(unitValue(runnerUnit, S, 'ExecStart'), 'ExecStart')
    expect(exec).toMatch(/agenticcp-agent(\.mjs)?\s+run\b/)
    const env = envFile(join(systemdDir, 'runner.env.example'))
    const drain = Number(flag(exec, 'drain-timeout') ?? env.get('AGENTICCP_DRAIN_TIMEOUT') ?? DEFAULT_DRAIN_SECONDS)
    const grace = Number(
      flag(exec, 'cancel-grace') ?? env.get('AGENTICCP_CANCEL_GRACE') ?? DEFAULT_CANCEL_GRACE_SECONDS,
    )
    const stop = seconds(must(unitValue(runnerUnit, S, 'TimeoutStopSec'), 'TimeoutStopSec'))
    expect(stop).toBeGreaterThan(drain)
    expect(stop).toBeGreaterThan(drain + grace + STOP_REPORT_SECONDS)
    expect(unitValue(runnerUnit, S, 'Restart')).toBe('always')
  })

  it("keeps the runner's identity in its StateDirectory, and reads its token from a file", () => {
    const S = 'Service'
    const exec = must(unitValue(runnerUnit, S, 'ExecStart'), 'ExecStart')
    const stateDirs = must(unitValue(runnerUnit, S, 'StateDirectory'), 'StateDirectory').split(/\s+/)
    expect(flag(exec, 'state-dir')).toBe(`/var/lib/${stateDirs[0]}`)
    expect(unitValue(runnerUnit, S, 'EnvironmentFile')).toBe('/etc/agenticcp/runner.env')
    const env = envFile(join(systemdDir, 'runner.env.example'))
    expect(env.get('AGENTICCP_URL')).toMatch(/^https?:\/\//)
    expect(env.get('AGENTICCP_TOKEN_FILE')).toMatch(/^\//)
    expect(env.has('AGENTICCP_TOKEN')).toBe(false)
    expect(flag(exec, 'token')).toBeUndefined()
  })

  it('stops the server after its own shutdown, as an unprivileged user, writing only its data dir', () => {
    const S = 'Service'
    expect(unitValue(serverUnit, S, 'User')).toBe('agenticcp')
    expect(unitValue(serverUnit, S, 'WorkingDirectory')).toBe('/opt/agenticcp-agent')
    expect(unitValue(serverUnit, S, 'EnvironmentFile')).toBe('/etc/agenticcp/agenticcp.env')
    expect(unitValue(serverUnit, S, 'ExecStart')).toBe('/usr/bin/node dist/server.js')
    expect(unitValue(serverUnit, S, 'KillSignal') ?? 'SIGTERM').toBe('SIGTERM')
    expect(seconds(must(unitValue(serverUnit, S, 'TimeoutStopSec'), 'TimeoutStopSec'))).toBeGreaterThan(
      SERVER_SHUTDOWN_SECONDS,
    )
    expect(unitValue(serverUnit, S, 'Restart')).toMatch(/^(on-failure|always)$/)
    expect(unitValue(serverUnit, S, 'NoNewPrivileges')).toBe('yes')
    expect(unitValue(serverUnit, S, 'ProtectSystem')).toBe('strict')
    const stateDir = must(unitValue(serverUnit, S, 'StateDirectory'), 'StateDirectory')
    const dataDir = (serverUnit.get(S)?.get('Environment') ?? [])
      .flatMap((e) => e.split(/\s+/))
      .find((kv) => kv.startsWith('DATA_DIR='))
    expect(dataDir).toBe(`DATA_DIR=/var/lib/${stateDir}`)
  })

  it('ships example env files with placeholders, never a secret', () => {
    for (const file of ['agenticcp.env.example', 'runner.env.example']) {
      const env = envFile(join(systemdDir, file))
      for (const [key, value] of env) {
        if (/SECRET|PASSWORD|TOKEN$|_KEY$/.test(key)) expect(value, `${file}: ${key}`).toMatch(/^<.*>$/)
      }
      const text = readFileSync(join(systemdDir, file), 'utf8')
      expect(text, file).not.toMatch(/acpr_[A-Za-z0-9_-]{8,}/)
      expect(text, file).not.toMatch(/(postgres(ql)?|redis|rediss):\/\/[^:\s/@]+:(?!<)[^@\s]+@/)
    }
    const serverEnv = envFile(join(systemdDir, 'agenticcp.env.example'))
    expect(serverEnv.get('ENVIRONMENT')).toBe('production')
    expect(serverEnv.has('SECRET_KEY')).toBe(true)
    expect(serverEnv.has('DATABASE_URL')).toBe(true)
  })
})
