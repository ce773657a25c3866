/**
 * Redis for tests: a private `redis-server` per test file (never the shared
 * 6379), with faults on demand, an app instance wired to it, and an app
 * instance in a child process.
 * The child process itself is `redis-child.ts`.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { createClient } from 'redis'
import type { Test } from 'tap'
import { type RedisBrokerLogger, type RedisBrokerOptions, redisBroker } from '../../lib/broker/redis.js'
import htmlSse from '../../lib/index.js'
import { sourceChild } from './child.js'
import { listen } from './sse.js'

/** A key prefix of its own for one test. */
export function uniquePrefix(): string {
  return `test:${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}:`
}

/** A logger that records lines, for asserting what an outage logs. */
/**
 * How many times this Redis ran each of `commands` (server-wide, every client)
 * and how many of those failed, from one `INFO commandstats`: the sums.
 */
export async function commandCalls(
  admin: { sendCommand(args: string[]): Promise<unknown> },
  ...commands: string[]
): Promise<{ calls: number; failed: number }> {
  const info = String(await admin.sendCommand(['INFO', 'commandstats']))
  let calls = 0
  let failed = 0
  for (const command of commands) {
    const line = new RegExp(`cmdstat_${command.toLowerCase()}:calls=(\\d+).*failed_calls=(\\d+)`).exec(info)
    calls += Number(line?.[1] ?? 0)
    failed += Number(line?.[2] ?? 0)
  }
  return { calls, failed }
}

export function recordingLogger() {
  const lines: Array<{ level: 'info' | 'warn' | 'error'; msg: string; obj: object }> = []
  const logger: RedisBrokerLogger = {
    info: (obj, msg) => lines.push({ level: 'info', msg, obj }),
    warn: (obj, msg) => lines.push({ level: 'warn', msg, obj }),
    error: (obj, msg) => lines.push({ level: 'error', msg, obj })
  }
  return { lines, logger }
}

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function ping(url: string): Promise<boolean> {
  const client = createClient({ url, socket: { reconnectStrategy: false, connectTimeout: 500 } })
  client.on('error', () => {})
  try {
    await client.connect()
    return String(await client.sendCommand(['PING'])) === 'PONG'
  } catch {
    return false
  } finally {
    client.destroy()
  }
}

/** A private, non-persistent `redis-server` on a free loopback port, stopped at teardown. */
export interface PrivateRedis {
  readonly port: number
  readonly url: string
  /** Starts it again on the same port after `kill()`; resolves once it answers PING. */
  start(): Promise<void>
  /** SIGKILL: no shutdown, no save. Resolves once the process is gone. */
  kill(): Promise<void>
  /** SIGSTOP: connections stay open but nothing answers, as behind a dead network path. */
  pause(): void
  /** SIGCONT after `pause()`. */
  resume(): void
  /** `kill()` then `start()`: a server that lost every key, on the same port. */
  restart(): Promise<void>
}

/**
 * Starts a private `redis-server` (`--save '' --appendonly no`, its own
 * temporary `--dir`) on a free port, waits until it answers, and kills it
 * (and removes its directory) when `t` ends.
 *
 * @example
 * ```ts
 * const redis = await privateRedis(t)
 * const broker = redisBroker({ url: redis.url })
 * ```
 */
export async function privateRedis(t: Test): Promise<PrivateRedis> {
  const port = await freePort()
  const url = `redis://127.0.0.1:${port}`
  const dir = await mkdtemp(path.join(tmpdir(), 'fastify-html-sse-redis-'))
  let child: ChildProcess | null = null
  const kill = async () => {
    const running = child
    child = null
    if (running === null || running.exitCode !== null || running.signalCode !== null) return
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGKILL')
    await exited
  }
  const start = async () => {
    if (child !== null) throw new Error('the private redis-server is already running')
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]
    const started = spawn('redis-server', [...args, '--daemonize', 'no', '--loglevel', 'warning'], {
      stdio: 'ignore'
    })
    child = started
    let failed: Error | null = null
    started.once('error', (err) => {
      failed = err
    })
    const end = Date.now() + 10_000
    while (!(await ping(url))) {
      if (failed !== null) throw failed
      if (started.exitCode !== null) throw new Error(`redis-server exited with ${started.exitCode}`)
      if (Date.now() > end) throw new Error(`redis-server did not answer on port ${port} within 10 s`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
  const signal = (name: NodeJS.Signals) => {
    if (child === null) throw new Error('the private redis-server is not running')
    child.kill(name)
  }
  t.teardown(async () => {
    await kill()
    await rm(dir, { recursive: true, force: true })
  })
  await start()
  return {
    port,
    url,
    start,
    kill,
    pause: () => signal('SIGSTOP'),
    resume: () => signal('SIGCONT'),
    async restart() {
      await kill()
      await start()
    }
  }
}

/** Options of `redisApp` and `childInstance`. */
export interface RedisAppOptions extends Omit<RedisBrokerOptions, 'url' | 'client' | 'prefix' | 'logger'> {
  /** The plugin's `maxBufferedBytes`. */
  maxBufferedBytes?: number
}

/**
 * An app with a Redis broker and `GET /events?topics=a,b`, listening on a free
 * loopback port.
 */
export async function redisApp(
  url: string,
  prefix: string,
  logger?: RedisBrokerLogger,
  options: RedisAppOptions = {}
): Promise<{ app: FastifyInstance; base: string }> {
  const { maxBufferedBytes, ...brokerOptions } = options
  const app = Fastify()
  const broker = redisBroker({ url, prefix, ...brokerOptions, ...(logger === undefined ? {} : { logger }) })
  await app.register(htmlSse, {
    heartbeatMs: 0,
    ...(maxBufferedBytes === undefined ? {} : { maxBufferedBytes }),
    broker
  })
  // The app made the broker: it closes it after itself.
  app.addHook('onClose', () => broker.close())
  app.get('/events', (req, reply) => {
    const topics = String((req.query as { topics?: string }).topics ?? 'a').split(',')
    reply.sse({ topics })
  })
  const base = await listen(app)
  return { app, base }
}

/** Messages between the test and an instance in a child process. */
export type ToChild =
  | { publish: { topic: string; html: string } }
  | { block: number }
  | { stats: true }
  | { close: true }
export type FromChild =
  | { base: string }
  | { id: string }
  | { error: string }
  | { blocked: number }
  | { stats: { connections: number; dropped: number } }

/** An app instance in a child process. */
export interface ChildInstance {
  readonly base: string
  publish(topic: string, html: string): Promise<string>
  /**
   * Blocks the child's event loop with a busy loop for `ms` (a GC pause, a CPU
   * spike). Resolves when the child says it is about to block.
   */
  block(ms: number): Promise<void>
  /** The child's `app.sse.stats()` connections and dropped. */
  stats(): Promise<{ connections: number; dropped: number }>
  /** Kills the child (SIGKILL) unless it already left. */
  kill(): void
}

/**
 * Starts `redisApp` in a child `node` running `redis-child.ts` through the
 * same ts-node ESM loader tap uses: no build step, and the child runs the very
 * source under test.
 */
export async function childInstance(
  t: Test,
  url: string,
  prefix: string,
  options: RedisAppOptions = {}
): Promise<ChildInstance> {
  const child = sourceChild(new URL('./redis-child.ts', import.meta.url), [url, prefix, JSON.stringify(options)])
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  t.teardown(kill)
  // Answers come in the order of the requests: one queue of waiters.
  const waiting: Array<{ resolve: (m: FromChild) => void; reject: (e: Error) => void }> = []
  let exited: Error | null = null
  child.on('message', (message: FromChild) => waiting.shift()?.resolve(message))
  child.on('exit', (code) => {
    exited = new Error(`the child instance exited (${code})`)
    for (const w of waiting.splice(0)) w.reject(exited)
  })
  const next = () =>
    new Promise<FromChild>((resolve, reject) => {
      if (exited !== null) reject(exited)
      else waiting.push({ resolve, reject })
    })
  const ask = (message: ToChild) => {
    const answer = next()
    child.send(message)
    return answer
  }
  const ready = await next()
  if (!('base' in ready)) throw new Error(`the child instance failed: ${JSON.stringify(ready)}`)
  return {
    base: ready.base,
    async publish(topic, html) {
      const reply = await ask({ publish: { topic, html } })
      if (!('id' in reply)) throw new Error(`the child could not publish: ${JSON.stringify(reply)}`)
      return reply.id
    },
    async block(ms) {
      await ask({ block: ms })
    },
    async stats() {
      const reply = await ask({ stats: true })
      if (!('stats' in reply)) throw new Error(`unexpected answer: ${JSON.stringify(reply)}`)
      return reply.stats
    },
    kill
  }
}
