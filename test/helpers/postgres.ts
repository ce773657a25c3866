/**
 * PostgreSQL for tests: a database of its own per test file on the server of
 * `DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/test), dropped at
 * teardown; a TCP proxy in front of it that the test can stop; an app instance
 * wired to it; a pool that records the queries it runs; transactions; a
 * writer in a child process to SIGKILL inside its transaction. App-state
 * instances on Postgres are those of `app-state.ts`.
 */
import type { ChildProcess } from 'node:child_process'
import { type AddressInfo, createServer, type Socket, connect as tcpConnect } from 'node:net'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import pg from 'pg'
import type { Test } from 'tap'
import { inTransaction as transaction } from '../../example/notes.js'
import {
  type PgPool,
  type PostgresBroker,
  type PostgresBrokerOptions,
  postgresBroker
} from '../../lib/broker/postgres.js'
import htmlSse from '../../lib/index.js'
import { sourceChild } from './child.js'
import { listen } from './sse.js'

/** The server the tests use; each file makes and drops a database of its own on it. */
export const ADMIN_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

/** A table name of its own for one test. */
export function uniqueTable(): string {
  return `t_${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
}

/** `url` with another database (and optionally another host:port). */
export function withDatabase(url: string, database: string, port?: number): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  if (port !== undefined) {
    u.hostname = '127.0.0.1'
    u.port = String(port)
  }
  return u.toString()
}

/** Makes a database of its own for this test file; dropped at teardown. */
export async function privateDatabase(t: Test): Promise<{ url: string; name: string; port: number }> {
  const name = `fhs_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  const admin = new pg.Client({ connectionString: ADMIN_URL })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  t.teardown(async () => {
    const again = new pg.Client({ connectionString: ADMIN_URL })
    await again.connect()
    await again.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await again.end()
  })
  const u = new URL(ADMIN_URL)
  return { url: withDatabase(ADMIN_URL, name), name, port: Number(u.port || 5432) }
}

/** A TCP proxy to PostgreSQL that the test can make silent (a frozen server or a dead path) and cut. */
export interface PgProxy {
  port: number
  /** Stops forwarding in both directions; connections stay open and new ones are accepted but silent. */
  stop(): void
  /** Forwards again, new connections included (what was held while stopped is dropped with its sockets). */
  resume(): void
  /** Closes every connection (a restart or a dropped link, as the client sees it). */
  cut(): void
  /** Connections accepted so far. */
  readonly accepted: number
}

export async function pgProxy(t: Test, target: { host?: string; port: number }): Promise<PgProxy> {
  let forwarding = true
  let accepted = 0
  const pairs = new Set<[Socket, Socket]>()
  const server = createServer((client) => {
    accepted++
    const upstream = tcpConnect(target.port, target.host ?? '127.0.0.1')
    const pair: [Socket, Socket] = [client, upstream]
    pairs.add(pair)
    const drop = () => {
      client.destroy()
      upstream.destroy()
      pairs.delete(pair)
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.on('data', (chunk) => {
      if (forwarding) upstream.write(chunk)
    })
    upstream.on('data', (chunk) => {
      if (forwarding) client.write(chunk)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const proxy: PgProxy = {
    port: (server.address() as AddressInfo).port,
    stop() {
      forwarding = false
    },
    resume() {
      // What arrived while silent is gone: those connections are broken now, as after a partition.
      proxy.cut()
      forwarding = true
    },
    cut() {
      for (const [a, b] of pairs) {
        a.destroy()
        b.destroy()
      }
      pairs.clear()
    },
    get accepted() {
      return accepted
    }
  }
  t.teardown(() => {
    proxy.cut()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return proxy
}

/** An app instance on the Postgres broker with `GET /events?topics=a,b`, listening on 127.0.0.1; closed at teardown. */
export async function pgApp(
  t: Test,
  options: PostgresBrokerOptions
): Promise<{ app: FastifyInstance; base: string; broker: PostgresBroker }> {
  const app = Fastify({ logger: false })
  const broker = postgresBroker(options)
  await app.register(htmlSse, { heartbeatMs: 0, broker })
  app.addHook('onClose', () => broker.close())
  app.get('/events', (req, reply) => {
    const topics = String((req.query as { topics?: string }).topics ?? 'a').split(',')
    reply.sse({ topics })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  return { app, base, broker }
}

/** A pool (for the broker's `pool` option) that records the text of every query it runs. */
export function recordingPool(t: Test, url: string): { pool: PgPool; texts: string[]; values: unknown[][] } {
  const texts: string[] = []
  /** The parameters of each statement in `texts`, at the same index. */
  const values: unknown[][] = []
  const real = new pg.Pool({ connectionString: url, max: 4 })
  real.on('error', () => {})
  t.teardown(() => real.end())
  const pool: PgPool = {
    connect: async () => {
      const client = await real.connect()
      return {
        query: (text: string, params?: unknown[]) => {
          texts.push(text)
          values.push(params ?? [])
          return client.query(text, params)
        },
        release: (err?: Error | boolean) => client.release(err)
      }
    },
    end: () => Promise.resolve(),
    options: real.options
  }
  return { pool, texts, values }
}

/**
 * Runs `work` in a transaction on a client of `pool`, with the example's
 * `inTransaction`: COMMIT, or ROLLBACK when `rollback` or when it throws.
 */
export async function inTransaction<T>(
  pool: pg.Pool,
  work: (client: pg.PoolClient) => Promise<T>,
  { rollback = false, isolation = 'READ COMMITTED' }: { rollback?: boolean; isolation?: string } = {}
): Promise<T> {
  return transaction<pg.PoolClient, T>(pool, `BEGIN ISOLATION LEVEL ${isolation}`, async (client) => {
    const result = await work(client)
    // Rolled back here, the example's COMMIT that follows finds no transaction: a notice, not an error.
    if (rollback) await client.query('ROLLBACK')
    return result
  })
}

/**
 * A child process that publishes inside a transaction and then waits to be
 * killed: it says `written` once its INSERT and publish are done, before COMMIT.
 */
export function killableWriter(url: string, table: string): ChildProcess {
  return sourceChild(new URL(import.meta.url), ['writer', url, table])
}

async function runWriter(url: string, table: string): Promise<void> {
  const broker = postgresBroker({ connectionString: url, table })
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  await client.query('BEGIN')
  await client.query("INSERT INTO notes (text) VALUES ('from the killed writer')")
  const id = await broker.publish('a', 'data: <p>from the killed writer</p>\n\n', { transaction: client })
  process.send?.({ written: id })
  // Waits for SIGKILL with the transaction open.
  setInterval(() => {}, 1000)
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'writer') {
  await runWriter(process.argv[3] as string, process.argv[4] as string)
}
