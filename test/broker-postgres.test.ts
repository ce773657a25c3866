import pg from 'pg'
import t from 'tap'
import { resolveOptions } from '../lib/broker/postgres/options.js'
import { statements } from '../lib/broker/postgres/schema.js'
import { postgresBroker } from '../lib/broker/postgres.js'
import { type BrokerEvent, CONTROL_TOPIC } from '../lib/broker/types.js'
import { brokerContract } from './helpers/broker-contract.js'
import { pgProxy, privateDatabase, recordingPool, uniqueTable, withDatabase } from './helpers/postgres.js'
import { until } from './helpers/sse.js'

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
  const table = uniqueTable()
  const publisher = postgresBroker({ pool, table })
  t.teardown(() => publisher.close())
  const ids: string[] = []
  for (let i = 0; i < 200; i++) ids.push(await publisher.publish('a', `data: ${i}\n\n`))
  // A pool that records the queries the late broker sends (its LISTEN connection is its own).
  const { pool: counting, texts } = recordingPool(t, db.url)
  const late = postgresBroker({ pool: counting, table })
  t.teardown(() => late.close())
  await late.listen(() => {})
  t.equal(await late.lastId(), ids[199], 'lastId is the newest id (ids past 9, 99: ordered as numbers)')
  const before = texts.length
  const replays = await Promise.all(Array.from({ length: 50 }, () => late.replay(['a'], ids[99] as string)))
  t.ok(
    replays.every((r) => r.found && r.events.map((e) => e.id).join() === ids.slice(100).join()),
    'each of 50 resumes from the 100th gets the 100 events after it'
  )
  t.equal(texts.length - before, 0, 'answered from the window filled at start, without a query')
})

t.test('the reads are planned under jit_above_cost on a new table (no JIT compile per read)', async (t) => {
  const table = uniqueTable()
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

t.test('presence statements are planned under jit_above_cost too', async (t) => {
  const table = uniqueTable()
  const broker = postgresBroker({ pool, table })
  t.teardown(() => broker.close())
  await broker.sharePresence('i1', new Map([['a', { streams: 1, members: ['m'] }]]), 12_000)
  const sql = statements(resolveOptions({ pool, table }))
  const limit = Number((await pool.query('SHOW jit_above_cost')).rows[0].jit_above_cost)
  const shares = JSON.stringify([{ topic: 'a', streams: 1, members: ['m'] }])
  for (const [name, text, values] of [
    ['share', sql.share, ['i2', shares, 12_000, true]],
    ['presence', sql.presence, ['a']]
  ] as const) {
    const plan = await pool.query(`EXPLAIN (FORMAT JSON) ${text}`, [...values])
    const cost = plan.rows[0]['QUERY PLAN'][0].Plan['Total Cost'] as number
    t.ok(cost < limit, `${name}: cost ${cost} < jit_above_cost ${limit}`)
  }
})

t.test('a table of an earlier version gains the key column and the presence table at start', async (t) => {
  const table = uniqueTable()
  // The layout before keys and presence, with one event in it.
  await pool.query(
    `CREATE TABLE "${table}" (id bigint PRIMARY KEY, topic text NOT NULL, body text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`
  )
  await pool.query(`CREATE SEQUENCE "${table}_seq"`)
  await pool.query(
    `CREATE TABLE "${table}_meta" (one boolean PRIMARY KEY DEFAULT true CHECK (one), epoch bigint NOT NULL, trimmed bigint NOT NULL DEFAULT 0)`
  )
  await pool.query(`INSERT INTO "${table}_meta" (epoch) VALUES (1234)`)
  await pool.query(`INSERT INTO "${table}" (id, topic, body) VALUES (nextval('"${table}_seq"'), 'a', 'data: old\n\n')`)
  const broker = postgresBroker({ pool, table, pollMs: 100 })
  t.teardown(() => broker.close())
  const got: BrokerEvent[] = []
  await broker.listen((e) => {
    got.push(e)
  })
  const keyed = await broker.publish('a', 'data: new\n\n', { key: 'k1' })
  const plain = await broker.publish('a', 'data: plain\n\n')
  t.equal(keyed, '1234-2', 'the epoch and the sequence of the old table go on')
  await until(() => got.length === 2, 5000, 'the two live events')
  t.same(
    got.map((e) => [e.id, e.key]),
    [
      [keyed, 'k1'],
      [plain, undefined]
    ],
    'live: the key on the keyed event, none on the other'
  )
  t.notOk('key' in (got[1] as object), 'an unkeyed event has no key property at all')
  const replay = await broker.replay(['a'], '1234-0')
  t.same(
    replay.found ? replay.events.map((e) => [e.id, e.key, e.frame.toString()]) : replay,
    [
      ['1234-1', undefined, 'id: 1234-1\ndata: old\n\n'],
      [keyed, 'k1', 'id: 1234-2\ndata: new\n\n'],
      [plain, undefined, 'id: 1234-3\ndata: plain\n\n']
    ],
    'the old row (no key) and the new ones through the range query'
  )
  await broker.sharePresence('i1', new Map([['a', { streams: 2, members: ['x'] }]]), 12_000)
  t.same(await broker.presence('a'), { streams: 2, members: ['x'] }, 'presence works on the upgraded table')
  // A second broker on the upgraded table finds nothing missing: no ALTER again.
  const again = postgresBroker({ pool, table })
  t.teardown(() => again.close())
  t.same(await again.presence('a'), { streams: 2, members: ['x'] }, 'a second broker reads it')
  // The version before instance renewals: a presence table, no `_presence_live`; its rows count by their own expiry.
  await broker.sharePresence('i1', new Map([['a', null]]), 12_000)
  await pool.query(`DROP TABLE "${table}_presence_live"`)
  await pool.query(
    `INSERT INTO "${table}_presence" VALUES ('a', 'earlier', 1, '["e"]', now() + interval '1 minute'), ('a', 'lapsed', 5, '[]', now() - interval '1 second')`
  )
  const renewing = postgresBroker({ pool, table })
  t.teardown(() => renewing.close())
  t.same(
    await renewing.presence('a'),
    { streams: 1, members: ['e'] },
    "a broker of this version adds `_presence_live`; an earlier version's live row counts, its lapsed one not"
  )
  await renewing.sharePresence('i2', new Map([['a', { streams: 4, members: ['y'] }]]), 12_000)
  t.same(await again.presence('a'), { streams: 5, members: ['e', 'y'] }, 'the live instances of both versions add up')
})

t.test('keys: refused when empty, not a string or holding NUL; control entries go through', async (t) => {
  const table = uniqueTable()
  const broker = postgresBroker({ pool, table, pollMs: 100 })
  t.teardown(() => broker.close())
  for (const key of ['', 7, null, 'a\0b'] as unknown[]) {
    await t.rejects(
      broker.publish('a', 'data: x\n\n', { key: key as string }),
      { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' },
      `key ${JSON.stringify(key)} is refused`
    )
  }
  const got: BrokerEvent[] = []
  await broker.listen((e) => {
    got.push(e)
  })
  const control = await broker.publish(CONTROL_TOPIC, 'event: x\ndata: {}\n\n')
  const keyed = await broker.publish('a', 'data: y\n\n', { key: 'é \\ "quoted"' })
  await until(() => got.length === 2, 5000, 'both events live')
  t.same(
    got.map((e) => [e.id, e.topic, e.key]),
    [
      [control, '', undefined],
      [keyed, 'a', 'é \\ "quoted"']
    ],
    'the control entry (topic empty) is delivered like any event; the key comes back as given'
  )
  const replay = await broker.replay(['a'], control)
  t.same(
    replay.found ? replay.events.map((e) => e.key) : replay,
    ['é \\ "quoted"'],
    'a replay from the window carries the key'
  )
  const rows = await pool.query(`SELECT count(*)::int AS n FROM "${table}"`)
  t.equal(rows.rows[0].n, 2, 'no row was written for a refused key')
})

t.test('presence through one broker: shares, leaves, lapses, members kept exactly', async (t) => {
  const table = uniqueTable()
  const one = postgresBroker({ pool, table })
  const two = postgresBroker({ connectionString: db.url, table })
  t.teardown(() => Promise.all([one.close(), two.close()]))
  const odd = ['a\0b', 'a\\0b', 'a\\', 'Z', 'ä', '\\\\0']
  await one.sharePresence(
    'i1',
    new Map([
      ['t', { streams: 3, members: [...odd].sort() }],
      ['u', { streams: 1, members: [] }]
    ]),
    60_000
  )
  await two.sharePresence('i2', new Map([['t', { streams: 2, members: ['Z', 'b'] }]]), 60_000)
  t.same(
    await two.presence('t'),
    { streams: 5, members: [...odd, 'b'].sort() },
    'streams added up; members distinct, NUL and backslashes kept exactly, sorted as JS sorts'
  )
  t.same(await one.presence('u'), { streams: 1, members: [] }, 'a topic with streams but no members')
  await one.sharePresence('i1', new Map([['t', null]]), 60_000)
  t.same(await one.presence('t'), { streams: 2, members: ['Z', 'b'] }, 'a topic the instance left')
  await one.sharePresence('i1', new Map([['t', { streams: 4, members: ['q'] }]]), 60_000)
  await one.sharePresence('i1', new Map([['t', { streams: 1, members: ['r'] }]]), 60_000)
  t.same(await one.presence('t'), { streams: 3, members: ['Z', 'b', 'r'] }, 'a share replaces the previous one')

  // A share that lapses no longer counts; the database's clock decides.
  await two.sharePresence('i3', new Map([['t', { streams: 7, members: ['gone'] }]]), 1)
  await until(async () => (await one.presence('t')).streams === 3, 5000, 'the 1 ms share to lapse')
  t.same(await one.presence('t'), { streams: 3, members: ['Z', 'b', 'r'] }, 'a lapsed share counts for nothing')
  // Every call renews all of an instance's shares: i1's rows have not been shared again, and count.
  t.equal(await one.sharePresence('i1', new Map(), 60_000), true, 'a renewal without topics: i1 was live')
  await pool.query(`UPDATE "${table}_presence" SET expires_at = now() - interval '1 hour' WHERE instance = 'i1'`)
  t.same(await one.presence('u'), { streams: 1, members: [] }, "a share counts while its instance's renewal does")
  // Instances lapsed a whole TTL ago are swept with their rows by a new broker's first share.
  await pool.query(`UPDATE "${table}_presence_live" SET expires_at = now() - interval '1 hour' WHERE instance = 'i2'`)
  t.same(await one.presence('t'), { streams: 1, members: ['r'] }, 'a lapsed instance counts for nothing')
  const three = postgresBroker({ pool, table })
  t.teardown(() => three.close())
  t.equal(
    await three.sharePresence('i4', new Map([['v', { streams: 1, members: [] }]]), 60_000),
    false,
    'new: not live'
  )
  const left = await pool.query(`SELECT instance FROM "${table}_presence" ORDER BY instance`)
  t.same(
    left.rows.map((r) => r.instance),
    ['i1', 'i1', 'i3', 'i4'],
    'the rows of the instance lapsed a whole TTL ago (i2) were swept; the live ones and the one that lapsed just now (i3) stay'
  )
  const live = await pool.query(`SELECT instance FROM "${table}_presence_live" ORDER BY instance`)
  t.same(
    live.rows.map((r) => r.instance),
    ['i1', 'i3', 'i4'],
    'and so was the instance (i2)'
  )
  t.equal(await two.sharePresence('i2', new Map(), 60_000), false, 'i2, renewed after it was swept, is told so')
  t.same(await three.presence('t'), { streams: 1, members: ['r'] }, 'and presence is the same')
})

t.test('presence: bad input and an unanswering database get coded errors', async (t) => {
  const table = uniqueTable()
  const proxy = await pgProxy(t, { port: db.port })
  const broker = postgresBroker({
    connectionString: withDatabase(db.url, db.name, proxy.port),
    table,
    commandTimeoutMs: 500
  })
  t.teardown(() => broker.close())
  await t.rejects(
    broker.sharePresence('', new Map(), 1000),
    { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' },
    'an empty instance'
  )
  await t.rejects(
    broker.sharePresence('i', new Map([['a', null]]), 0),
    { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' },
    'a TTL of 0'
  )
  await broker.sharePresence('i', new Map([['a', { streams: 1, members: ['m'] }]]), 60_000)
  t.same(await broker.presence('a'), { streams: 1, members: ['m'] }, 'through the proxy')
  proxy.stop()
  await t.rejects(
    broker.presence('a'),
    { code: 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE' },
    'presence() past commandTimeoutMs'
  )
  await t.rejects(
    broker.sharePresence('i', new Map([['a', null]]), 60_000),
    { code: 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE' },
    'sharePresence() past commandTimeoutMs'
  )
  proxy.resume()
  t.same(await broker.presence('a'), { streams: 1, members: ['m'] }, 'answers again once the database is back')
  await broker.close()
  await t.rejects(broker.presence('a'), { code: 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE' }, 'presence() after close')
  await t.rejects(
    broker.sharePresence('i', new Map([['a', null]]), 1000),
    { code: 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE' },
    'sharePresence() after close'
  )
})
