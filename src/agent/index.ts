/** The runner as a library: `new Agent({url, token}).handle(type, fn).start()`. */
export {
  Agent,
  AgentFatalError,
  type AgentOptions,
  backoffMs,
  type Handler,
  type Provider,
  type Task,
  type TaskContext,
  TaskError,
} from './agent'
export { type AgentLogger, createLogger, silentAgentLogger } from './log'
export { type ShellPayload, type ShellResult, shellHandler } from './shell'
export { type AgentState, loadState, saveState } from './state'
export { type LogChunk, type LogStream, TaskLog } from './task-log'
