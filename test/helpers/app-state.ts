/**
 * App state through Redis: app instances whose streams have a member, on a
 * private `redis-server`, in this process or in a child process (to SIGKILL).
 *
 * Run as a script (`node --import <ts loader> test/helpers/app-state.ts child <url> <prefix>`),
 * this file starts one instance, tells its parent its base URL over IPC and
 * serves until it is killed.
 */
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { type RedisBrokerOptions, redisBroker } from '../../lib/broker/redis.js'
import { type LogLine, makeApp } from './app.js'
import { sourceChild } from './child.js'
import { listen } from './sse.js'

/** Broker options besides where Redis is. */
export type StateBrokerOptions = Omit<RedisBrokerOptions, 'url' | 'client' | 'prefix' | 'logger'>

/**
 * An app with a Redis broker and `GET /events?topics=a,b&member=m`: a stream of
 * those topics (default `room`) that belongs to `member` when given. Listens on
 * a free loopback port.
 */
export async function redisStateApp(
  url: string,
  prefix: string,
  options: StateBrokerOptions = {}
): Promise<{ app: FastifyInstance; base: string; logs: LogLine[] }> {
  const broker = redisBroker({ url, prefix, ...options })
  const { app, logs } = await makeApp({ broker })
  app.addHook('onClose', () => broker.close())
  app.get<{ Querystring: { topics?: string; member?: string } }>('/events', (req, reply) => {
    const { topics = 'room', member } = req.query
    reply.sse({ topics: topics.split(','), member })
  })
  const base = await listen(app)
  return { app, base, logs }
}

/** `redisStateApp`, closed when `t` ends. */
export async function stateInstance(t: Test, url: string, prefix: string, options: StateBrokerOptions = {}) {
  const instance = await redisStateApp(url, prefix, options)
  t.teardown(() => instance.app.close())
  return instance
}

/** An instance in a child process. */
export interface StateChild {
  readonly base: string
  /** SIGKILL: no close, no withdrawal of its presence. Resolves once the process is gone. */
  kill(): Promise<void>
}

/**
 * Starts `redisStateApp` in a child `node` running this file through the
 * ts-node ESM loader tap uses, so the child runs the source under test.
 */
export async function stateChild(t: Test, url: string, prefix: string): Promise<StateChild> {
  const child = sourceChild(new URL(import.meta.url), ['child', url, prefix])
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const running = () => child.exitCode === null && child.signalCode === null
  t.teardown(() => {
    if (running()) child.kill('SIGKILL')
  })
  const base = await new Promise<string>((resolve, reject) => {
    child.once('message', (message: { base?: string }) => {
      if (typeof message.base === 'string') resolve(message.base)
      else reject(new Error(`the child instance failed: ${JSON.stringify(message)}`))
    })
    child.once('exit', (code) => reject(new Error(`the child instance exited (${code})`)))
  })
  return {
    base,
    async kill() {
      if (running()) child.kill('SIGKILL')
      await gone
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'child') {
  const { base } = await redisStateApp(process.argv[3] as string, process.argv[4] as string)
  process.send?.({ base })
  // The parent going away ends this instance too (no presence withdrawal needed: it is a test).
  process.on('disconnect', () => process.exit(0))
}
