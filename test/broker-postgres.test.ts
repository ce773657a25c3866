import pg from 'pg'
import t from 'tap'
import { resolveOptions } from '../lib/broker/postgres/options.js'
import { statements } from '../lib/broker/postgres/schema.js'
import { postgresBroker } from '../lib/broker/postgres.js'
import { brokerContract } from './helpers/broker-contract.js'
import { privateDatabase } from './helpers/postgres.js'

const db = await privateDatabase(t)
const tableOf = (space: string) => `c_${space.replace(/[^a-z0-9]/gi, '_')}`.slice(0, 48)

brokerContract(
  t,
  'postgresBroker({ connectionString })',
  async ({ space, replay }) =>
    postgresBroker({
      connectionString: db.url,
      table: tableOf(space),
      pollMs: 200,
      ...(replay === undefined ? {} : { replay })
    }),
  { shared: true, batches: true }
)

const pool = new pg.Pool({ connectionString: db.url, max: 6 })
// DROP DATABASE ... WITH (FORCE) at teardown ends its idle connections.
pool.on('error', () => {})
t.teardown(() => pool.end())

brokerContract(
  t,
  'postgresBroker({ pool })',
  async ({ space, replay }) =>
    postgresBroker({ pool, table: tableOf(`p${space}`), ...(replay === undefined ? {} : { replay }) }),
  { shared: true, batches: true }
)

t.test('a broker started after 200 events starts at the head and answers resumes from memory', async (t) => {
  const table = tableOf(`late${Date.now()}`)
  const publisher = postgresBroker({ pool, table })
  t.teardown(() => publisher.close())
  const ids: string[] = []
  for (let i = 0; i < 200; i++) ids.push(await publisher.publish('a', `data: ${i}\n\n`))
  // A pool that counts the queries the late broker sends (its LISTEN connection is its own).
  let queries = 0
  const counting = new pg.Pool({ connectionString: db.url, max: 2 })
  counting.on('error', () => {})
  t.teardown(() => counting.end())
  const late = postgresBroker({
    pool: {
      connect: async () => {
        const client = await counting.connect()
        return {
          query: (text: string, values?: unknown[]) => {
            queries++
            return client.query(text, values)
          },
          release: (err?: Error | boolean) => client.release(err)
        }
      },
      end: () => Promise.resolve(),
      options: counting.options
    },
    table
  })
  t.teardown(() => late.close())
  await late.listen(() => {})
  t.equal(await late.lastId(), ids[199], 'lastId is the newest id (ids past 9, 99: ordered as numbers)')
  const before = queries
  const replays = await Promise.all(Array.from({ length: 50 }, () => late.replay(['a'], ids[99] as string)))
  t.ok(
    replays.every((r) => r.found && r.events.map((e) => e.id).join() === ids.slice(100).join()),
    'each of 50 resumes from the 100th gets the 100 events after it'
  )
  t.equal(queries - before, 0, 'answered from the window filled at start, without a query')
})

t.test('the reads are planned under jit_above_cost on a new table (no JIT compile per read)', async (t) => {
  const table = tableOf(`jit${Date.now()}`)
  const broker = postgresBroker({ pool, table })
  t.teardown(() => broker.close())
  await broker.publish('a', 'data: x\n\n')
  const sql = statements(resolveOptions({ pool, table }))
  const limit = Number((await pool.query('SHOW jit_above_cost')).rows[0].jit_above_cost)
  const costOf = async (text: string, values: unknown[]) =>
    (await pool.query(`EXPLAIN (FORMAT JSON) ${text}`, values)).rows[0]['QUERY PLAN'][0].Plan['Total Cost'] as number
  for (const [name, text, values] of [
    ['read', sql.read, [0, 1000]],
    ['range', sql.range, [0, '9223372036854775807', 1002]],
    ['newest', sql.newest, [1001]],
    ['head', sql.head, []]
  ] as const) {
    const cost = await costOf(text, [...values])
    t.ok(cost < limit, `${name}: cost ${cost} < jit_above_cost ${limit}`)
  }
})
