/**
 * Redis for tests: the shared server at 127.0.0.1:6379 with a key prefix per
 * test, a private `redis-server` that a test may kill and restart, an SSE
 * client, and an app instance to run in a child process.
 *
 * Run as a script (`node --import <ts loader> test/helpers/redis.ts child <url> <prefix>`),
 * this file starts one app instance and talks to its parent over IPC.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { type IncomingMessage, request } from 'node:http'
import { type AddressInfo, createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import Fastify, { type FastifyInstance } from 'fastify'
import { createClient } from 'redis'
import type { Test } from 'tap'
import { type RedisBrokerLogger, redisBroker } from '../../lib/broker/redis.js'
import htmlSse from '../../lib/index.js'

/** The shared test Redis. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/** A key prefix of its own for one test. */
export function uniquePrefix(): string {
  return `test:${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}:`
}

/** Deletes every key under each prefix (the broker writes only `<prefix>log`). */
export async function deleteKeys(prefixes: Iterable<string>, url = REDIS_URL): Promise<void> {
  const keys = [...prefixes].map((prefix) => `${prefix}log`)
  if (keys.length === 0) return
  const client = createClient({ url })
  client.on('error', () => {})
  await client.connect()
  try {
    await client.sendCommand(['DEL', ...keys])
  } finally {
    client.destroy()
  }
}

/** A logger that records lines, for asserting what an outage logs. */
export function recordingLogger() {
  const lines: Array<{ level: 'info' | 'warn' | 'error'; msg: string; obj: object }> = []
  const logger: RedisBrokerLogger = {
    info: (obj, msg) => lines.push({ level: 'info', msg, obj }),
    warn: (obj, msg) => lines.push({ level: 'warn', msg, obj }),
    error: (obj, msg) => lines.push({ level: 'error', msg, obj })
  }
  return { lines, logger }
}

/** Resolves once `check()` is true; rejects after `ms` (polls every 10 ms). */
export async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
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

/** A private, non-persistent `redis-server` on a free port, killed at teardown. */
export interface PrivateRedis {
  readonly port: number
  readonly url: string
  /** Starts it (again) on the same port; resolves once it answers PING. */
  start(): Promise<void>
  /** SIGKILL: no shutdown, no save. Resolves once the process is gone. */
  kill(): Promise<void>
  /** SIGSTOP: connections stay open but nothing answers, as behind a dead network path. */
  freeze(): void
  /** SIGCONT. */
  thaw(): void
}

export async function privateRedis(t: Test): Promise<PrivateRedis> {
  const port = await freePort()
  const url = `redis://127.0.0.1:${port}`
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
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
    child = spawn('redis-server', [...args, '--daemonize', 'no', '--loglevel', 'warning'], {
      stdio: 'ignore'
    })
    const started = child
    let failed: Error | null = null
    started.once('error', (err) => {
      failed = err
    })
    const end = Date.now() + 5000
    while (!(await ping(url))) {
      if (failed !== null) throw failed
      if (started.exitCode !== null) throw new Error(`redis-server exited with ${started.exitCode}`)
      if (Date.now() > end) throw new Error(`redis-server did not answer on port ${port} within 5 s`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
  const signal = (name: NodeJS.Signals) => {
    if (child === null) throw new Error('the private redis-server is not running')
    child.kill(name)
  }
  t.teardown(kill)
  await start()
  return { port, url, start, kill, freeze: () => signal('SIGSTOP'), thaw: () => signal('SIGCONT') }
}

/** One open SSE connection, parsed as a browser would. */
export interface SseClient {
  readonly events: EventSourceMessage[]
  /** Resolves with the events once at least `n` arrived; rejects after `ms`. */
  waitFor(n: number, ms?: number): Promise<EventSourceMessage[]>
  close(): void
}

/** Opens `url` as an SSE client; resolves once the response headers are in. */
export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers: { accept: 'text/event-stream', ...headers } })
    req.on('error', reject)
    req.on('response', (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        res.destroy()
        reject(new Error(`${url} answered ${res.statusCode}`))
        return
      }
      const events: EventSourceMessage[] = []
      const waiters = new Set<() => void>()
      const parser = createParser({
        onEvent(event) {
          events.push(event)
          for (const wake of waiters) wake()
        }
      })
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => parser.feed(chunk))
      res.on('error', () => {})
      resolve({
        events,
        waitFor(n, ms = 5000) {
          if (events.length >= n) return Promise.resolve(events)
          return new Promise((done, fail) => {
            const timer = setTimeout(() => {
              waiters.delete(check)
              fail(new Error(`${url}: saw ${events.length} of ${n} events within ${ms} ms`))
            }, ms)
            const check = () => {
              if (events.length < n) return
              clearTimeout(timer)
              waiters.delete(check)
              done(events)
            }
            waiters.add(check)
          })
        },
        close() {
          res.destroy()
          req.destroy()
        }
      })
    })
    req.end()
  })
}

/**
 * An app with a Redis broker and `GET /events?topics=a,b`, listening on a free
 * loopback port.
 */
export async function redisApp(
  url: string,
  prefix: string,
  logger?: RedisBrokerLogger
): Promise<{ app: FastifyInstance; base: string }> {
  const app = Fastify()
  await app.register(htmlSse, {
    heartbeatMs: 0,
    broker: redisBroker(logger === undefined ? { url, prefix } : { url, prefix, logger })
  })
  app.get('/events', (req, reply) => {
    const topics = String((req.query as { topics?: string }).topics ?? 'a').split(',')
    reply.sse({ topics })
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  return { app, base: `http://127.0.0.1:${port}` }
}

/** Messages between the test and an instance in a child process. */
export type ToChild = { publish: { topic: string; html: string } } | { close: true }
export type FromChild = { base: string } | { id: string } | { error: string } | { stats: number }

/** An app instance in a child process. */
export interface ChildInstance {
  readonly base: string
  publish(topic: string, html: string): Promise<string>
  /** Kills the child (SIGKILL) unless it already left. */
  kill(): void
}

/**
 * Starts `redisApp` in a child `node` running this TypeScript file through the
 * same ts-node ESM loader tap uses: no build step, and the child runs the very
 * source under test.
 */
export async function childInstance(t: Test, url: string, prefix: string): Promise<ChildInstance> {
  const child = spawn(
    process.execPath,
    ['--import', import.meta.resolve('@tapjs/typescript/import'), fileURLToPath(import.meta.url), 'child', url, prefix],
    {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: {
        ...process.env,
        TS_NODE_TRANSPILE_ONLY: '1',
        TS_NODE_PROJECT: fileURLToPath(new URL('../../tsconfig.json', import.meta.url))
      }
    }
  )
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  t.teardown(kill)
  const next = () =>
    new Promise<FromChild>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error('the child instance did not answer within 15 s'))
      }, 15_000)
      const onMessage = (message: FromChild) => {
        cleanup()
        resolve(message)
      }
      const onExit = (code: number | null) => {
        cleanup()
        reject(new Error(`the child instance exited (${code})`))
      }
      const cleanup = () => {
        clearTimeout(timer)
        child.off('message', onMessage)
        child.off('exit', onExit)
      }
      child.on('message', onMessage)
      child.on('exit', onExit)
    })
  const ready = await next()
  if (!('base' in ready)) throw new Error(`the child instance failed: ${JSON.stringify(ready)}`)
  return {
    base: ready.base,
    async publish(topic, html) {
      const answer = next()
      child.send({ publish: { topic, html } } satisfies ToChild)
      const reply = await answer
      if (!('id' in reply)) throw new Error(`the child could not publish: ${JSON.stringify(reply)}`)
      return reply.id
    },
    kill
  }
}

async function runChild(url: string, prefix: string): Promise<void> {
  const send = (message: FromChild) => process.send?.(message)
  const { app, base } = await redisApp(url, prefix)
  process.on('message', (message: ToChild) => {
    if ('close' in message) {
      void app.close().then(() => process.disconnect())
      return
    }
    app.sse.publish(message.publish.topic, message.publish.html).then(
      (id) => send({ id }),
      (err: Error) => send({ error: err.message })
    )
  })
  // The parent going away ends this instance too.
  process.on('disconnect', () => {
    void app.close().then(() => process.exit(0))
  })
  send({ base })
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'child') {
  await runChild(process.argv[3] as string, process.argv[4] as string)
}
