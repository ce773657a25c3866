/**
 * `npm run start:cluster`: the example as two instances on two ports (PORT and
 * PORT + 1). A note posted on one updates the tabs of both; a browser may
 * reconnect to either.
 *
 * - With DATABASE_URL: they share PostgreSQL. Notes are rows, each published
 *   in the transaction that inserts it, and a page renders its notes and its
 *   resume point from one snapshot.
 * - Otherwise: they share topics through Redis (REDIS_URL); notes stay in each
 *   instance's memory.
 */
import type { Broker } from 'fastify-html-sse'
import { postgresBroker } from 'fastify-html-sse/postgres'
import { redisBroker } from 'fastify-html-sse/redis'
import pg from 'pg'
import { buildApp } from './app.js'
import { type NoteStore, postgresNotes } from './notes.js'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const databaseUrl = process.env.DATABASE_URL
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const prefix = process.env.REDIS_PREFIX ?? 'fastify-html-sse:example:'

/** One pool per instance, as two processes would have; ended after its app closes. */
const pools: pg.Pool[] = []

async function backend(): Promise<{ broker: Broker; notes?: NoteStore }> {
  if (databaseUrl === undefined) return { broker: redisBroker({ url, prefix }) }
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 5 })
  pools.push(pool)
  return { broker: postgresBroker({ pool, table: 'example_sse_log' }), notes: await postgresNotes(pool) }
}

const instances = await Promise.all(
  [0, 1].map(async (n) => {
    const { broker, notes } = await backend()
    const app = await buildApp({
      logger: { base: { instance: n === 0 ? 'A' : 'B' } },
      broker,
      ...(notes === undefined ? {} : { notes }),
      jobIdBase: n * 1000
    })
    // The broker made here is closed here, after its app.
    app.addHook('onClose', () => broker.close())
    const address = await app.listen({ port: port + n, host })
    app.log.info(
      `instance ${n === 0 ? 'A' : 'B'} (${databaseUrl === undefined ? 'Redis' : 'PostgreSQL'}): open ${address}/ (htmx 2) or ${address}/?htmx=4`
    )
    return app
  })
)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    Promise.all(instances.map((app) => app.close()))
      .then(() => Promise.all(pools.map((pool) => pool.end())))
      .then(
        () => instances[0]?.log.info('closed'),
        (err: unknown) => {
          instances[0]?.log.error({ err }, 'close failed')
          process.exitCode = 1
        }
      )
  })
}
