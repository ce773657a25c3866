/**
 * App-state instances, on any broker: apps whose streams have a member, in
 * this process or in a child process (to SIGKILL). The app-state suite
 * (`app-state-suite.ts`) runs on them.
 *
 * Run as a script (`node --import <ts loader> test/helpers/app-state.ts child <redis|postgres> <url> <space>`),
 * this file starts one instance on a broker of that kind (the space is the
 * Redis key prefix or the Postgres table), tells its parent its base URL over
 * IPC and serves until it is killed.
 */
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { postgresBroker } from '../../lib/broker/postgres.js'
import { redisBroker } from '../../lib/broker/redis.js'
import type { Broker } from '../../lib/index.js'
import { type LogLine, makeApp } from './app.js'
import { sourceChild } from './child.js'
import { listen } from './sse.js'

/** An app-state instance in this process. */
export interface StateInstance {
  readonly app: FastifyInstance
  readonly base: string
  readonly logs: LogLine[]
}

/**
 * An app on `broker` with `GET /events?topics=a,b&member=m`: a stream of those
 * topics (default `room`) that belongs to `member` when given. Listens on a
 * free loopback port. The app closes `broker` after itself: give it one made
 * for it.
 */
export async function stateApp(broker: Broker): Promise<StateInstance> {
  const { app, logs } = await makeApp({ broker })
  app.addHook('onClose', () => broker.close())
  app.get<{ Querystring: { topics?: string; member?: string } }>('/events', (req, reply) => {
    const { topics = 'room', member } = req.query
    reply.sse({ topics: topics.split(','), member })
  })
  const base = await listen(app)
  return { app, base, logs }
}

/** `stateApp`, closed when `t` ends. */
export async function stateInstance(t: Test, broker: Broker): Promise<StateInstance> {
  const instance = await stateApp(broker)
  t.teardown(() => instance.app.close())
  return instance
}

/** The brokers a child instance can run on, made from a URL and a space. */
const childBrokers = {
  redis: (url: string, prefix: string) => redisBroker({ url, prefix }),
  postgres: (url: string, table: string) => postgresBroker({ connectionString: url, table })
}
export type ChildBroker = keyof typeof childBrokers

/** An instance in a child process. */
export interface StateChild {
  readonly base: string
  /** SIGKILL: no close, no withdrawal of its presence. Resolves once the process is gone. */
  kill(): Promise<void>
}

/** Starts `stateApp` on a `kind` broker of `url` and `space` in a child process; killed when `t` ends. */
export async function stateChild(t: Test, kind: ChildBroker, url: string, space: string): Promise<StateChild> {
  const child = sourceChild(new URL(import.meta.url), ['child', kind, url, space])
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
  const [kind, url, space] = process.argv.slice(3) as [ChildBroker, string, string]
  const { base } = await stateApp(childBrokers[kind](url, space))
  process.send?.({ base })
  // The parent going away ends this instance too (no presence withdrawal needed: it is a test).
  process.on('disconnect', () => process.exit(0))
}
