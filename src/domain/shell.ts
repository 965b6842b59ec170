import { z } from 'zod'

/**
 * The built-in `shell` task type's payload, shared by the service (which refuses a task
 * whose payload does not match, 422 at create) and the runner's shell handler (which runs
 * it): one schema, one set of limits.
 */
export const SHELL_TASK_TYPE = 'shell'

export const ShellPayload = z.strictObject({
  /** A string runs through `/bin/sh -c`; an array runs the program directly, no shell. */
  command: z.union([z.string().min(1).max(100_000), z.array(z.string().max(100_000)).min(1).max(10_000)]),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string().max(100_000)).optional(),
  cwd: z.string().min(1).max(4096).optional(),
})
export type ShellPayload = z.infer<typeof ShellPayload>
