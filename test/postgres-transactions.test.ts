/**
 * Publishing inside the app's transactions, through two instances sharing one
 * table, over real sockets with SSE clients: rollback, out-of-order commits,
 * a crowd of concurrent transactions, a REPEATABLE READ render, a writer killed
 * before its COMMIT, and the brokers that refuse a transaction.
 */
import pg from 'pg'
import t, { type Test } from 'tap'
import { memoryBroker } from '../lib/broker/memory.js'
import { redisBroker } from '../lib/broker/redis.js'
import { compareIds } from '../lib/broker/types.js'
import { makeApp } from './helpers/app.js'
import { inTransaction, killableWriter, pgApp, privateDatabase, uniqueTable } from './helpers/postgres.js'
import { privateRedis } from './helpers/redis.js'
import { type Client, connect, deferred, isSettled, until } from './helpers/sse.js'

const db = await privateDatabase(t)
const pool = new pg.Pool({ connectionString: db.url, max: 24 })
// DROP DATABASE ... WITH (FORCE) at teardown ends its idle connections.
pool.on('error', () => {})
t.teardown(() => pool.end())
await pool.query('CREATE TABLE notes (id serial PRIMARY KEY, text text NOT NULL)')

/** Two instances sharing a new table. */
async function twoInstances(t: Test) {
  const table = uniqueTable()
  const a = await pgApp(t, { connectionString: db.url, table, pollMs: 200 })
  const b = await pgApp(t, { connectionString: db.url, table, pollMs: 200 })
  return { table, a, b }
}

const dataOf = (c: Client) => c.events.map((e) => e.data)
const idsOf = (c: Client) => c.events.map((e) => e.id)

/** Publishes a marker through `app` and waits until every client saw it. */
async function marker(app: { sse: { publish(topic: string, html: string): Promise<string> } }, clients: Client[]) {
  const html = `<p>marker ${Math.random()}</p>`
  await app.sse.publish('a', html)
  await Promise.all(clients.map((c) => until(() => dataOf(c).includes(html), 5000, 'the marker')))
  return html
}

t.test('a rolled-back publish reaches nobody; a committed one reaches every instance', async (t) => {
  const { a, b } = await twoInstances(t)
  const onA = await connect(`${a.base}/events?topics=a`)
  const onB = await connect(`${b.base}/events?topics=a`)
  const rolledBack = await inTransaction(
    pool,
    (client) => a.app.sse.publish('a', '<p>rolled back</p>', 'message', { transaction: client }),
    { rollback: true }
  )
  const committed = await inTransaction(pool, (client) =>
    b.app.sse.publish('a', '<p>committed</p>', 'message', { transaction: client })
  )
  const last = await marker(a.app, [onA, onB])
  t.same(dataOf(onA), ['<p>committed</p>', last], 'A: the committed event and the marker only')
  t.same(dataOf(onB), ['<p>committed</p>', last], 'B: the same')
  t.equal(onA.events[0]?.id, committed, 'with the id publish returned')
  t.ok(compareIds(rolledBack, committed) < 0, 'the rolled-back id is simply never used')
  onA.close()
  onB.close()
})

t.test('T1 publishes first and commits last, T2 publishes second: one order everywhere, exact resume', async (t) => {
  const { a, b } = await twoInstances(t)
  const onA = await connect(`${a.base}/events?topics=a`)
  const onB = await connect(`${b.base}/events?topics=a`)
  const c1 = await pool.connect()
  const c2 = await pool.connect()
  t.teardown(() => {
    c1.release()
    c2.release()
  })
  await c1.query('BEGIN')
  await c2.query('BEGIN')
  await c1.query("INSERT INTO notes (text) VALUES ('t1')")
  const p1 = await a.app.sse.publish('a', '<p>T1</p>', 'message', { transaction: c1 })
  await c2.query("INSERT INTO notes (text) VALUES ('t2')")
  const p2 = b.app.sse.publish('a', '<p>T2</p>', 'message', { transaction: c2 })
  // T2's publish waits for T1's transaction: the order lock is held until T1 ends.
  await until(
    async () =>
      Number(
        (await pool.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
          .rows[0].n
      ) === 1,
    5000,
    "T2 waiting for T1's lock"
  )
  t.notOk(await isSettled(p2), "T2's publish waits while T1 is open")
  const commit2 = p2.then(() => c2.query('COMMIT'))
  await c1.query('SELECT pg_sleep(0.05)')
  await c1.query('COMMIT')
  const id2 = await p2
  await commit2
  t.ok(compareIds(p1, id2) < 0, 'T1 got the smaller id')
  const last = await marker(b.app, [onA, onB])
  t.same(dataOf(onA), ['<p>T1</p>', '<p>T2</p>', last], 'A delivered T1 then T2')
  t.same(idsOf(onB), idsOf(onA), 'B delivered the same ids in the same order')
  const resumed = await connect(`${b.base}/events?topics=a`, { 'last-event-id': p1 })
  await until(() => dataOf(resumed).includes(last), 5000, 'the resumed client to catch up')
  t.same(dataOf(resumed), ['<p>T2</p>', last], "resuming on B from T1's id (taken on A): exactly T2 and the marker")
  for (const c of [onA, onB, resumed]) c.close()
})

t.test('120 concurrent transactions, random commit delays, one in five rolled back', async (t) => {
  const { a, b } = await twoInstances(t)
  const onA = await connect(`${a.base}/events?topics=a`)
  const onB = await connect(`${b.base}/events?topics=a`)
  const committed = new Map<string, string>()
  await Promise.all(
    Array.from({ length: 120 }, async (_, i) => {
      const html = `<p>note ${i}</p>`
      const rollback = i % 5 === 0
      const app = i % 2 === 0 ? a.app : b.app
      const id = await inTransaction(
        pool,
        async (client) => {
          await client.query('INSERT INTO notes (text) VALUES ($1)', [html])
          const id = await app.sse.publish('a', html, 'message', { transaction: client })
          await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 6)))
          return id
        },
        { rollback }
      )
      if (!rollback) committed.set(html, id)
    })
  )
  const last = await marker(a.app, [onA, onB])
  const gotA = dataOf(onA).slice(0, -1)
  t.equal(gotA.length, 96, 'A: 96 events')
  t.same([...gotA].sort(), [...committed.keys()].sort(), 'A: each committed event once, no rolled-back one')
  t.same(idsOf(onB), idsOf(onA), 'B: the same ids in the same order')
  t.same(dataOf(onB), dataOf(onA), 'B: the same events')
  const ids = idsOf(onA)
  t.ok(
    ids.every((id, i) => i === 0 || compareIds(ids[i - 1] as string, id as string) < 0),
    'ids increase along the delivery'
  )
  t.ok(
    onA.events.slice(0, -1).every((e) => committed.get(e.data) === e.id),
    'each event carries the id its publish returned'
  )
  const middle = onA.events[48]?.id as string
  const resumed = await connect(`${b.base}/events?topics=a`, { 'last-event-id': middle })
  await until(() => dataOf(resumed).includes(last), 5000, 'the resumed client to catch up')
  t.same(dataOf(resumed), dataOf(onA).slice(49), 'a resume from the middle gets exactly the suffix')
  for (const c of [onA, onB, resumed]) c.close()
})

t.test('lastId({ transaction }) after a REPEATABLE READ render: nothing missed, nothing twice', async (t) => {
  const { a, b } = await twoInstances(t)
  await pool.query('TRUNCATE notes')
  let n = 0
  let writing = true
  const note = async () => {
    const html = `<p>n${n++}</p>`
    await inTransaction(pool, async (client) => {
      await client.query('INSERT INTO notes (text) VALUES ($1)', [html])
      await b.app.sse.publish('a', html, 'message', { transaction: client })
    })
  }
  // An open transaction that has published: the render's snapshot must not see it, and the stream must.
  const pending = await pool.connect()
  t.teardown(() => pending.release())
  await pending.query('BEGIN')
  await pending.query("INSERT INTO notes (text) VALUES ('<p>pending</p>')")
  const pendingId = await a.app.sse.publish('a', '<p>pending</p>', 'message', { transaction: pending })
  const firstRender = deferred()
  const writers = (async () => {
    await firstRender.promise
    await pending.query('COMMIT')
    while (writing) await note()
  })()
  const renders: Array<{ rendered: string[]; client: Client }> = []
  for (let r = 0; r < 6; r++) {
    const { rendered, lastEventId } = await inTransaction(
      pool,
      async (client) => {
        const rows = await client.query('SELECT text FROM notes ORDER BY id')
        const lastEventId = (await a.app.sse.lastId({ transaction: client })) as string
        return { rendered: rows.rows.map((row: { text: string }) => row.text), lastEventId }
      },
      { isolation: 'REPEATABLE READ' }
    )
    if (r === 0) {
      t.ok(compareIds(lastEventId, pendingId) < 0, 'the first render: before the pending event')
      t.notOk(rendered.includes('<p>pending</p>'), 'and without its note')
      firstRender.resolve()
    }
    const client = await connect(`${(r % 2 === 0 ? a : b).base}/events?topics=a`, { 'last-event-id': lastEventId })
    renders.push({ rendered, client })
    await until(() => n > r * 3, 5000, 'more notes')
  }
  writing = false
  await writers
  const last = await marker(
    a.app,
    renders.map((r) => r.client)
  )
  const all = (await pool.query('SELECT text FROM notes ORDER BY id')).rows.map((row: { text: string }) => row.text)
  let exact = 0
  for (const { rendered, client } of renders) {
    const streamed = dataOf(client).filter((d) => d !== last)
    const seen = [...rendered, ...streamed]
    if (new Set(seen).size === seen.length && seen.length === all.length) exact++
    else t.same([...seen].sort(), [...all].sort(), 'render + stream = every note once')
  }
  t.equal(exact, renders.length, `all ${renders.length} renders + streams saw every note exactly once`)
  t.ok(all.length > 10, `${all.length} notes written meanwhile`)
  for (const r of renders) r.client.close()
})

t.test('a writer killed between its INSERT and its COMMIT: nothing delivered, nobody blocked', async (t) => {
  const { table, a, b } = await twoInstances(t)
  const onA = await connect(`${a.base}/events?topics=a`)
  const onB = await connect(`${b.base}/events?topics=a`)
  const before = Number((await pool.query('SELECT count(*)::int AS n FROM notes')).rows[0].n)
  const child = killableWriter(db.url, table)
  const written = deferred<string>()
  child.on('message', (m: { written?: string }) => {
    if (m.written !== undefined) written.resolve(m.written)
  })
  const exited = new Promise((resolve) => child.on('exit', resolve))
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  const id = await written.promise
  t.match(id, /^\d+-\d+$/, 'the child published inside its transaction')
  child.kill('SIGKILL')
  await exited
  // The server ends the dead backend's transaction and its lock; a publish goes through after it.
  const last = await marker(b.app, [onA, onB])
  t.same(dataOf(onA), [last], 'A got only the marker')
  t.same(dataOf(onB), [last], 'B got only the marker')
  const after = Number((await pool.query('SELECT count(*)::int AS n FROM notes')).rows[0].n)
  t.equal(after, before, "the killed writer's note is not in the table either")
  onA.close()
  onB.close()
})

t.test('a pool given as the transaction is refused: its query would run outside the transaction', async (t) => {
  const { a } = await twoInstances(t)
  await t.rejects(
    a.app.sse.publish('a', '<p>x</p>', 'message', { transaction: pool }),
    { code: 'FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED', message: /pool\.connect\(\)/ },
    'publish'
  )
  await t.rejects(
    a.app.sse.lastId({ transaction: pool }),
    { code: 'FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED' },
    'lastId'
  )
})

t.test('memory and Redis brokers refuse a transaction with a coded error', async (t) => {
  const client = await pool.connect()
  t.teardown(() => client.release())
  const memory = await makeApp({ broker: memoryBroker() })
  t.teardown(() => memory.app.close())
  const server = await privateRedis(t)
  const redisOfApp = redisBroker({ url: server.url })
  const redis = await makeApp({ broker: redisOfApp })
  t.teardown(() => redis.app.close().then(() => redisOfApp.close()))
  for (const [name, app] of [
    ['memory', memory.app],
    ['redis', redis.app]
  ] as const) {
    await t.rejects(
      app.sse.publish('a', '<p>x</p>', 'message', { transaction: client }),
      { code: 'FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED' },
      `${name}: publish`
    )
    await t.rejects(
      app.sse.lastId({ transaction: client }),
      { code: 'FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED' },
      `${name}: lastId`
    )
  }
})
