/**
 * The Postgres broker when the database goes away: a path that stops
 * forwarding (a frozen server or a partition, through a TCP proxy the test
 * controls), connections the server terminates, and an instance that falls
 * behind retention. Over real sockets with SSE clients.
 */
import pg from 'pg'
import t from 'tap'
import { postgresBroker } from '../lib/broker/postgres.js'
import { pgApp, pgProxy, privateDatabase, uniqueTable, withDatabase } from './helpers/postgres.js'
import { recordingLogger } from './helpers/redis.js'
import { type Client, connect, settles, until } from './helpers/sse.js'

const UNAVAILABLE = 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE'
// Instances behind the proxy get commandTimeoutMs 1500: short enough to see the rejections, long enough
// for their start on a busy machine.
const db = await privateDatabase(t)
const admin = new pg.Pool({ connectionString: db.url, max: 2 })
admin.on('error', () => {})
t.teardown(() => admin.end())

const dataOf = (c: Client) => c.events.map((e) => e.data)
/** Whether `promise` fulfils (a publish that works again, after an outage). */
const succeeds = (promise: Promise<unknown>) =>
  promise.then(
    () => true,
    () => false
  )

t.test('the database unreachable: publish and replay reject with the code, then recovery with no gap', async (t) => {
  const table = uniqueTable()
  const proxy = await pgProxy(t, { port: db.port })
  const { lines, logger } = recordingLogger()
  const viaProxy = withDatabase(db.url, db.name, proxy.port)
  const a = await pgApp(t, { connectionString: viaProxy, table, commandTimeoutMs: 1500, pollMs: 100, logger })
  const b = await pgApp(t, { connectionString: db.url, table, pollMs: 100 })
  const live = await connect(`${a.base}/events?topics=a`)
  const e1 = await b.app.sse.publish('a', '<p>1</p>')
  await live.waitFor(1)

  proxy.stop()
  await t.rejects(
    settles(a.app.sse.publish('a', '<p>lost</p>'), 'publish while silent'),
    { code: UNAVAILABLE },
    'publish rejects with the code'
  )
  // An id newer than what A delivered: only the table can say whether it exists.
  const ahead = `${e1.split('-')[0]}-${Number(e1.split('-')[1]) + 5}`
  await t.rejects(
    settles(a.broker.replay(['a'], ahead), 'replay while silent'),
    { code: UNAVAILABLE },
    'a replay that needs the table rejects with the code'
  )
  // A browser resuming meanwhile keeps its place: its stream ends, with no reset.
  const resuming = await connect(`${a.base}/events?topics=a`, { 'last-event-id': ahead })
  await settles(resuming.ended, 'the resuming stream to end')
  t.same(resuming.events, [], 'no reset and no event for the client whose replay failed')
  const during = [await b.app.sse.publish('a', '<p>2</p>'), await b.app.sse.publish('a', '<p>3</p>')]
  await until(() => lines.some((l) => l.level === 'warn'), 5000, 'the outage warning')
  // Once the reader knows, lastId cannot answer from memory either.
  await t.rejects(settles(a.app.sse.lastId(), 'lastId while silent'), { code: UNAVAILABLE }, 'so does lastId')

  proxy.resume()
  await until(() => succeeds(a.app.sse.publish('a', '<p>4</p>')), 10_000, 'publish through the proxy to work again')
  await until(() => dataOf(live).includes('<p>4</p>'), 10_000, 'the live client to catch up')
  t.same(dataOf(live), ['<p>1</p>', '<p>2</p>', '<p>3</p>', '<p>4</p>'], 'the open stream got every event, in order')
  t.same(
    live.events.slice(1, 3).map((e) => e.id),
    during,
    'with the ids B gave them'
  )
  t.notOk(
    live.events.some((e) => e.event === 'reset'),
    'and no reset'
  )
  const replay = await a.broker.replay(['a'], e1)
  t.same(replay.found && replay.events.map((e) => e.id).slice(0, 2), during, 'replays work again')
  t.equal(lines.filter((l) => l.level === 'warn').length, 1, 'one warning for the outage')
  t.ok(
    lines.some((l) => l.level === 'info' && /reconnected/.test(l.msg)),
    'and an info line once it is back'
  )
  live.close()
})

t.test('connections the server terminates: the reader and the pool reconnect by themselves', async (t) => {
  const table = uniqueTable()
  const name = `fhs_term_${process.pid}`
  const a = await pgApp(t, { connectionString: `${db.url}?application_name=${name}`, table, pollMs: 100 })
  const b = await pgApp(t, { connectionString: db.url, table, pollMs: 100 })
  const live = await connect(`${a.base}/events?topics=a`)
  await a.app.sse.publish('a', '<p>before</p>')
  await live.waitFor(1)
  const killed = await admin.query(
    'SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1',
    [name]
  )
  t.ok(killed.rows[0].n >= 1, `${killed.rows[0].n} connections of A terminated`)
  await b.app.sse.publish('a', '<p>from B</p>')
  await until(() => dataOf(live).includes('<p>from B</p>'), 10_000, "A's reader to come back")
  await until(() => succeeds(a.app.sse.publish('a', '<p>from A</p>')), 10_000, "A's publish to work again")
  await until(() => dataOf(live).includes('<p>from A</p>'), 10_000, 'the event published on A')
  t.same(dataOf(live).slice(0, 2), ['<p>before</p>', '<p>from B</p>'], 'nothing skipped, nothing twice')
  t.equal(new Set(dataOf(live)).size, live.events.length, 'no event twice')
  live.close()
})

t.test('an instance that falls behind retention gets a reset, never a silent jump', async (t) => {
  const table = uniqueTable()
  const proxy = await pgProxy(t, { port: db.port })
  const viaProxy = withDatabase(db.url, db.name, proxy.port)
  const a = await pgApp(t, {
    connectionString: viaProxy,
    table,
    commandTimeoutMs: 1500,
    pollMs: 100,
    retentionMs: 1000
  })
  const b = await pgApp(t, { connectionString: db.url, table, pollMs: 100, retentionMs: 1000 })
  const live = await connect(`${a.base}/events?topics=a`)
  await b.app.sse.publish('a', '<p>seen</p>')
  await live.waitFor(1)
  proxy.stop()
  const missed = await b.app.sse.publish('a', '<p>missed</p>')
  const seq = Number(missed.split('-')[1])
  // B's reader trims what is older than a second; the newest row always stays, so publish on.
  let n = 0
  await until(
    async () => {
      await b.app.sse.publish('a', `<p>filler ${n++}</p>`)
      const row = await admin.query(`SELECT trimmed::int AS trimmed FROM "${table}_meta"`)
      return row.rows[0].trimmed >= seq
    },
    15_000,
    'retention to remove the missed event'
  )
  proxy.resume()
  // The reset carries the head as A finds it on reconnecting: what came before is in the state a page refetches.
  await until(() => live.events.some((e) => e.event === 'reset'), 15_000, 'the reset')
  const after = await b.app.sse.publish('a', '<p>after</p>')
  await until(() => dataOf(live).includes('<p>after</p>'), 15_000, 'the event after the reset')
  const kinds = live.events.map((e) => e.event ?? 'message')
  t.equal(live.events[0]?.data, '<p>seen</p>', 'the event before the outage')
  t.equal(kinds[1], 'reset', 'then a reset')
  t.notOk(dataOf(live).includes('<p>missed</p>'), 'the removed event is not delivered')
  t.equal(live.events.at(-1)?.id, after, 'and delivery goes on after it')
  live.close()
})

t.test('a pool you pass stays open on close; a pool the broker made is ended', async (t) => {
  const table = uniqueTable()
  const pool = new pg.Pool({ connectionString: db.url, max: 2 })
  pool.on('error', () => {})
  t.teardown(() => pool.end())
  const given = postgresBroker({ pool, table })
  await given.listen(() => {})
  await given.publish('a', 'data: x\n\n')
  await given.close()
  t.equal((await pool.query('SELECT 1 AS one')).rows[0].one, 1, 'the given pool still answers')
  const name = `fhs_own_${process.pid}`
  const own = postgresBroker({ connectionString: `${db.url}?application_name=${name}`, table })
  await own.listen(() => {})
  await own.publish('a', 'data: y\n\n')
  await own.close()
  await until(
    async () =>
      (await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [name])).rows[0]
        .n === 0,
    5000,
    "the broker's own connections to close"
  )
  await t.rejects(own.publish('a', 'data: z\n\n'), { code: UNAVAILABLE }, 'publish after close')
})

t.test('bad options are refused with a coded error', async (t) => {
  for (const options of [
    { table: 'a-b' },
    { table: 'x.y.z' },
    { table: '' },
    { commandTimeoutMs: 0 },
    { retentionMs: 10 },
    { pool: {} },
    { pool: { connect() {}, end() {} }, connectionString: 'postgres://x' },
    { replay: -1 },
    { connectionString: 5 },
    { logger: { info() {} } },
    { table: 5 },
    { pollMs: 5 },
    null
  ]) {
    t.throws(
      () => postgresBroker(options as never),
      { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' },
      JSON.stringify(options)
    )
  }
})

t.test(
  'the table dropped under running instances: one error line, then the recreated table is read from its start',
  async (t) => {
    const table = uniqueTable()
    const { lines, logger } = recordingLogger()
    const a = await pgApp(t, { connectionString: db.url, table, pollMs: 50, logger })
    const b = await pgApp(t, { connectionString: db.url, table, pollMs: 50 })
    await a.broker.listen(() => {
      throw new Error('a listener that throws')
    })
    const live = await connect(`${a.base}/events?topics=a`)
    const old = await b.app.sse.publish('a', '<p>old</p>')
    await live.waitFor(1)
    await admin.query(`DROP TABLE "${table}", "${table}_meta"; DROP SEQUENCE "${table}_seq"`)
    const readFailed = (l: { level: string; msg: string }) =>
      l.level === 'error' && /reading the PostgreSQL/.test(l.msg)
    await until(() => lines.some(readFailed), 5000, 'A to say its reads fail')
    await t.rejects(b.app.sse.publish('a', '<p>lost</p>'), { code: UNAVAILABLE }, 'the publish that finds it gone')
    const fresh = await b.app.sse.publish('a', '<p>new</p>')
    await until(() => dataOf(live).includes('<p>new</p>'), 5000, 'the event of the new table')
    t.same(dataOf(live), ['<p>old</p>', '<p>new</p>'], 'the open stream goes on with the new table')
    t.not(fresh.split('-')[0], old.split('-')[0], 'whose ids have another epoch')
    t.equal(lines.filter(readFailed).length, 1, 'one error line for the failing reads')
    t.ok(
      lines.some((l) => l.level === 'info' && /recreated/.test(l.msg)),
      'and an info line for the recreated table'
    )
    t.ok(
      lines.some((l) => l.level === 'error' && /listener threw/.test(l.msg)),
      'a listener that throws is logged, and the others still got every event'
    )
    const resumed = await connect(`${a.base}/events?topics=a`, { 'last-event-id': old })
    await resumed.waitFor(1)
    t.same(
      resumed.events.map((e) => [e.event, e.id]),
      [['reset', fresh]],
      'an id of the dropped table: a reset to the new head'
    )
    live.close()
    resumed.close()
  }
)

t.test('without a logger and outside the plugin, an outage is a process warning', async (t) => {
  const proxy = await pgProxy(t, { port: db.port })
  const broker = postgresBroker({
    connectionString: withDatabase(db.url, db.name, proxy.port),
    table: uniqueTable(),
    commandTimeoutMs: 1500,
    pollMs: 50
  })
  t.teardown(() => broker.close())
  await broker.listen(() => {})
  const warned = new Promise<Error & { code?: string }>((resolve) => {
    const on = (w: Error & { code?: string }) => {
      if (w.code !== 'FST_HTML_SSE_POSTGRES') return
      process.off('warning', on)
      resolve(w)
    }
    process.on('warning', on)
  })
  proxy.stop()
  const warning = await settles(warned, 'the warning')
  t.match(warning.message, /lost the connection to PostgreSQL/, 'it says what happened')
  proxy.resume()
})

t.test('listen while the database is unreachable rejects with the code; a later listen works', async (t) => {
  const proxy = await pgProxy(t, { port: db.port })
  const table = uniqueTable()
  // Made while reachable, so only the reader's start meets the outage.
  const broker = postgresBroker({
    connectionString: withDatabase(db.url, db.name, proxy.port),
    table,
    commandTimeoutMs: 1500
  })
  t.teardown(() => broker.close())
  await broker.lastId()
  proxy.stop()
  await t.rejects(
    settles(
      broker.listen(() => {}),
      'listen while silent'
    ),
    { code: UNAVAILABLE },
    'listen rejects'
  )
  proxy.resume()
  const seen: string[] = []
  await broker.listen((event) => seen.push(event.id))
  const id = await broker.publish('a', 'data: x\n\n')
  await until(() => seen.includes(id), 5000, 'the event')
  t.same(seen, [id], 'then it delivers')
})

t.test(
  'a publish whose connection is terminated while it waits for the order lock rejects with the code',
  async (t) => {
    const table = uniqueTable()
    const name = `fhs_wait_${process.pid}`
    const holder = postgresBroker({ connectionString: db.url, table })
    const waiter = postgresBroker({ connectionString: `${db.url}?application_name=${name}`, table })
    t.teardown(() => Promise.all([holder.close(), waiter.close()]))
    await waiter.lastId()
    const client = await admin.connect()
    t.teardown(() => client.release())
    await client.query('BEGIN')
    await holder.publish('a', 'data: held\n\n', { transaction: client })
    const waiting = waiter.publish('a', 'data: waits\n\n')
    // Handled from now on: it rejects while the terminate below is awaited.
    const rejected = t.rejects(settles(waiting, 'the waiting publish'), { code: UNAVAILABLE }, 'it rejects')
    await until(
      async () =>
        (
          await admin.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
            [name]
          )
        ).rows[0].n === 1,
      5000,
      'the publish to wait for the lock'
    )
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
      [name]
    )
    // Without a listener on the pool's checked-out client, its `error` event would be an uncaught exception here.
    await rejected
    await client.query('ROLLBACK')
    const id = await waiter.publish('a', 'data: after\n\n')
    t.match(id, /^\d+-\d+$/, 'and the next publish works')
  }
)
