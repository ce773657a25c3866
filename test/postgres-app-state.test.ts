/**
 * App state through the Postgres broker: presence, revocation and keyed events
 * across two (or three) app instances sharing one table of a private
 * database, over real sockets; one instance in a child process is killed with
 * SIGKILL.
 */
import pg from 'pg'
import t from 'tap'
import { resolveOptions } from '../lib/broker/postgres/options.js'
import { statements } from '../lib/broker/postgres/schema.js'
import type { Presence } from '../lib/index.js'
import { errorsIn } from './helpers/app.js'
import {
  inTransaction,
  pgStateChild,
  pgStateInstance,
  privateDatabase,
  recordingPool,
  uniqueTable
} from './helpers/postgres.js'
import { type Client, connect, until } from './helpers/sse.js'

const db = await privateDatabase(t)
const url = db.url

const admin = new pg.Pool({ connectionString: url, max: 3 })
// DROP DATABASE ... WITH (FORCE) at teardown ends its idle connections.
admin.on('error', () => {})
t.teardown(() => admin.end())

/** Nearest-rank percentile of `values`. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y)
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] as number
}

type Instance = Awaited<ReturnType<typeof pgStateInstance>>

/** Waits until every instance answers `expected` for `topic`. */
async function presenceIs(instances: Instance[], topic: string, expected: Presence, what: string, ms = 10_000) {
  const wanted = JSON.stringify(expected)
  await until(
    async () => {
      for (const { app } of instances) if (JSON.stringify(await app.sse.presence(topic)) !== wanted) return false
      return true
    },
    ms,
    what
  )
}

const events = (client: Client) => client.events.map((e) => [e.event ?? 'message', e.data])

t.test('presence adds up both instances and follows opens and closes', async (t) => {
  const table = uniqueTable()
  const a = await pgStateInstance(t, url, table)
  const b = await pgStateInstance(t, url, table)
  const open = (base: string, query: string) => connect(`${base}/events?${query}`)
  const zoeA = await open(a.base, 'member=zoe')
  const bobA = await open(a.base, 'member=Bob')
  const annA = await open(a.base, 'member=ann&topics=room,other')
  const zoeB = await open(b.base, 'member=zoe')
  const anonB = await open(b.base, '')
  const cidB = await open(b.base, 'member=cid&topics=other')
  await presenceIs([a, b], 'room', { streams: 5, members: ['Bob', 'ann', 'zoe'] }, 'room on both instances')
  await presenceIs([a, b], 'other', { streams: 2, members: ['ann', 'cid'] }, 'other on both instances')
  t.same(
    await b.app.sse.presence('room'),
    { streams: 5, members: ['Bob', 'ann', 'zoe'] },
    'five streams; members distinct (zoe on both) and sorted as JS sorts (Bob before ann); the stream without a member counts in streams'
  )
  t.same(await a.app.sse.presence('nobody'), { streams: 0, members: [] }, 'a topic without streams')

  bobA.close()
  anonB.close()
  zoeA.close()
  await presenceIs([a, b], 'room', { streams: 2, members: ['ann', 'zoe'] }, 'the closes on both instances')
  t.pass('closes on both instances show on both')

  // An instance that closes takes its shares back before its close resolves.
  await b.app.close()
  t.same(await a.app.sse.presence('room'), { streams: 1, members: ['ann'] }, "room without B's streams at once")
  t.same(await a.app.sse.presence('other'), { streams: 1, members: ['ann'] }, "other without B's streams at once")
  for (const client of [annA, zoeB, cidB]) client.close()
  await presenceIs([a], 'room', { streams: 0, members: [] }, 'the last close')
  const rows = await admin.query(`SELECT count(*)::int AS n FROM "${table}_presence" WHERE topic = 'room'`)
  t.equal(rows.rows[0].n, 0, 'a topic nobody holds leaves no row behind')
  t.same(errorsIn(a.logs), [], 'no errors logged')
})

t.test('presence costs per topic, not per stream: one statement per share, one query per presence()', async (t) => {
  const table = uniqueTable()
  const sql = statements(resolveOptions({ table }))
  const ra = recordingPool(t, url)
  const rb = recordingPool(t, url)
  const a = await pgStateInstance(t, url, table, { pool: ra.pool })
  const b = await pgStateInstance(t, url, table, { pool: rb.pool })
  const shares = () => [...ra.texts, ...rb.texts].filter((text) => text === sql.share).length
  const before = shares()
  const clients = await Promise.all(
    Array.from({ length: 200 }, (_, i) => connect(`${(i % 2 ? a : b).base}/events?topics=crowd&member=m${i % 7}`))
  )
  const members = Array.from({ length: 7 }, (_, i) => `m${i}`)
  await presenceIs([a, b], 'crowd', { streams: 200, members }, '200 streams on two instances')
  const statementsSent = shares() - before
  t.comment(`200 streams opened on two instances: ${statementsSent} share statements`)
  t.ok(statementsSent < 100, `fewer share statements (${statementsSent}) than half the streams: coalesced per topic`)

  const queriesBefore = ra.texts.length
  const answers = await Promise.all(Array.from({ length: 20 }, () => a.app.sse.presence('crowd')))
  t.ok(
    answers.every((p) => p.streams === 200 && p.members.join() === members.join()),
    'twenty presence calls'
  )
  const sent = ra.texts.slice(queriesBefore)
  t.equal(sent.filter((text) => text === sql.presence).length, 20, 'cost one query each')
  for (const client of clients) client.close()
  await presenceIs([a, b], 'crowd', { streams: 0, members: [] }, 'every stream closed')
})

t.test('an instance killed with SIGKILL leaves presence by itself', async (t) => {
  const table = uniqueTable()
  const child = await pgStateChild(t, url, table)
  const a = await pgStateInstance(t, url, table)
  const onChild = [
    await connect(`${child.base}/events?member=kid`),
    await connect(`${child.base}/events`),
    await connect(`${child.base}/events?member=ann`)
  ]
  const annA = await connect(`${a.base}/events?member=ann`)
  await presenceIs([a], 'room', { streams: 4, members: ['ann', 'kid'] }, "the child's streams and A's")
  t.pass("the child's streams count")
  const killedAt = performance.now()
  await child.kill()
  await Promise.all(onChild.map((c) => c.ended))
  await presenceIs([a], 'room', { streams: 1, members: ['ann'] }, "the killed instance's shares to lapse", 30_000)
  t.comment(`the killed instance left presence ${Math.round(performance.now() - killedAt)} ms after SIGKILL`)
  t.pass('only the living instance counts')
  annA.close()
})

t.test('disconnect() ends the matching streams on both instances after revoked; others go on', async (t) => {
  const table = uniqueTable()
  const a = await pgStateInstance(t, url, table)
  const b = await pgStateInstance(t, url, table)
  const annA = await connect(`${a.base}/events?member=ann`)
  const annB = await connect(`${b.base}/events?member=ann&topics=other`)
  const cidA = await connect(`${a.base}/events?member=cid&topics=other`)
  const danB = await connect(`${b.base}/events?member=dan&topics=room,other`)
  const bobA = await connect(`${a.base}/events?member=bob`)
  const bobB = await connect(`${b.base}/events?member=bob`)
  const anonB = await connect(`${b.base}/events`)
  await until(() => a.app.sse.stats().connections === 3 && b.app.sse.stats().connections === 4)

  await a.app.sse.disconnect({ member: 'ann' })
  await Promise.all([annA.ended, annB.ended])
  t.same([events(annA), events(annB)], [[['revoked', '']], [['revoked', '']]], "ann's streams on A and B: revoked")

  await b.app.sse.disconnect({ topic: 'other' })
  await Promise.all([cidA.ended, danB.ended])
  t.same(
    [events(cidA), events(danB)],
    [[['revoked', '']], [['revoked', '']]],
    "the streams of topic other on A and B (dan's also has room): revoked"
  )

  // Both fields must match: bob has no stream of other.
  await a.app.sse.disconnect({ member: 'bob', topic: 'other' })
  const marker = await b.app.sse.publish('room', '<p>marker</p>')
  const untouched = [bobA, bobB, anonB]
  await until(() => untouched.every((c) => c.events.at(-1)?.id === marker), 5000, 'the marker on the untouched')
  t.same(
    untouched.map(events),
    [[['message', '<p>marker</p>']], [['message', '<p>marker</p>']], [['message', '<p>marker</p>']]],
    'the streams that matched nothing got nothing but the marker'
  )
  t.equal(a.app.sse.stats().connections + b.app.sse.stats().connections, 3, 'and are still open')
  const control = await admin.query(`SELECT count(*)::int AS n FROM "${table}" WHERE topic = ''`)
  t.equal(control.rows[0].n, 3, 'the three disconnects are control rows (topic empty) of the log')
  for (const client of untouched) client.close()
  t.same([...errorsIn(a.logs), ...errorsIn(b.logs)], [], 'no errors logged')
})

t.test('disconnect latency across two instances (printed, not asserted)', async (t) => {
  const table = uniqueTable()
  const a = await pgStateInstance(t, url, table)
  const b = await pgStateInstance(t, url, table)
  const bystander = await connect(`${b.base}/events?member=stay&topics=room,other`)
  const rounds = 50
  const latencies: number[] = []
  for (let i = 0; i < rounds; i++) {
    const member = `m${i}`
    const clients = await Promise.all([
      connect(`${a.base}/events?member=${member}`),
      connect(`${a.base}/events?member=${member}&topics=other`),
      connect(`${b.base}/events?member=${member}`),
      connect(`${b.base}/events?member=${member}&topics=room,other`)
    ])
    await until(() => a.app.sse.stats().connections === 2 && b.app.sse.stats().connections === 3)
    const ends = clients.map((c) => c.ended.then(() => performance.now()))
    const start = performance.now()
    await (i % 2 ? a : b).app.sse.disconnect({ member })
    latencies.push(Math.max(...(await Promise.all(ends))) - start)
    if (!clients.every((c) => JSON.stringify(events(c)) === '[["revoked",""]]')) {
      t.fail(`round ${i}: every stream of ${member} gets revoked, then ends`)
    }
  }
  const marker = await a.app.sse.publish('room', '<p>marker</p>')
  await until(() => bystander.events.at(-1)?.id === marker, 5000, 'the marker on the bystander')
  t.same(events(bystander), [['message', '<p>marker</p>']], 'the bystander of every round got only the marker')
  bystander.close()
  const p50 = percentile(latencies, 50)
  const p99 = percentile(latencies, 99)
  t.comment(
    `Postgres: disconnect() to the last of 4 streams ended on 2 instances, ${rounds} rounds: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms`
  )
  t.equal(latencies.length, rounds, 'every round measured')
})

t.test('keyed events: a resume on another instance gets the newest of each key in its place', async (t) => {
  const table = uniqueTable()
  const sql = statements(resolveOptions({ table }))
  const rb = recordingPool(t, url)
  const a = await pgStateInstance(t, url, table)
  const b = await pgStateInstance(t, url, table, { pool: rb.pool })
  const start = await b.app.sse.lastId()
  t.match(start, /^\d+-0$/, 'the id before the first event of an empty table')
  const live = await connect(`${a.base}/events`)
  const early = await connect(`${b.base}/events`)
  await until(() => a.app.sse.stats().connections === 1 && b.app.sse.stats().connections === 1)
  const hello = await a.app.sse.publish('room', '<p>hello</p>')
  await until(() => early.events.at(-1)?.id === hello, 5000, 'the first event on B')
  early.close()

  const all: string[] = ['<p>hello</p>']
  for (let i = 1; i <= 100; i++) {
    const progress = `<progress value="${i}"></progress>`
    await a.app.sse.publish('room', progress, 'message', { key: 'job-1' })
    all.push(progress)
    if (i % 25 === 0) {
      await a.app.sse.publish('room', `<p>note ${i}</p>`)
      all.push(`<p>note ${i}</p>`)
    }
    if (i % 50 === 0) {
      await a.app.sse.publish('room', `<b>other ${i}</b>`, 'message', { key: 'job-2' })
      all.push(`<b>other ${i}</b>`)
    }
  }
  // The same key on another topic supersedes nothing of room.
  await b.app.sse.publish('elsewhere', '<p>same key</p>', 'message', { key: 'job-1' })
  const end = await a.app.sse.publish('room', '<p>end</p>')
  all.push('<p>end</p>')
  const expected = ['<p>note 25</p>', '<p>note 50</p>', '<p>note 75</p>', '<progress value="100"></progress>']
  expected.push('<p>note 100</p>', '<b>other 100</b>', '<p>end</p>')

  const resumeOn = async (base: string, lastId: string) => {
    const client = await connect(`${base}/events`, { 'last-event-id': lastId })
    await until(() => client.events.at(-1)?.id === end, 5000, 'the resume')
    client.close()
    return client.events.map((e) => e.data)
  }
  const ranges = (texts: string[]) => texts.filter((text) => text === sql.range).length

  let before = ranges(rb.texts)
  t.same(await resumeOn(b.base, hello), expected, 'on B, from its window: the newest of each key, in its place')
  t.equal(ranges(rb.texts) - before, 0, 'from the window, without a range query')

  // An instance started now fills its window from the table; the empty table's id is read with a range query.
  const rc = recordingPool(t, url)
  const c = await pgStateInstance(t, url, table, { pool: rc.pool })
  before = ranges(rc.texts)
  t.same(await resumeOn(c.base, hello), expected, 'on C, from the window it filled at start')
  t.equal(ranges(rc.texts) - before, 0, 'without a range query')
  t.same(
    await resumeOn(c.base, start as string),
    ['<p>hello</p>', ...expected],
    'on C from the empty table id, through the range query: the same after hello'
  )
  t.equal(ranges(rc.texts) - before, 1, 'one range query')

  await until(() => live.events.at(-1)?.id === end, 5000, 'the live client')
  t.same(
    live.events.map((e) => e.data),
    all,
    'the live client got every event, keyed or not, in order'
  )
  live.close()
})

t.test('a keyed publish in a transaction that rolls back sends nothing', async (t) => {
  const table = uniqueTable()
  const a = await pgStateInstance(t, url, table)
  const b = await pgStateInstance(t, url, table)
  const onB = await connect(`${b.base}/events`)
  await until(() => b.app.sse.stats().connections === 1)
  const first = await a.app.sse.publish('room', '<p>first</p>', 'message', { key: 'k' })
  const rolledBack = await inTransaction(
    admin,
    (client) => a.app.sse.publish('room', '<p>rolled back</p>', 'message', { key: 'k', transaction: client }),
    { rollback: true }
  )
  const marker = await a.app.sse.publish('room', '<p>marker</p>')
  await until(() => onB.events.at(-1)?.id === marker, 5000, 'the marker on B')
  t.same(
    onB.events.map((e) => [e.id, e.data]),
    [
      [first, '<p>first</p>'],
      [marker, '<p>marker</p>']
    ],
    'the live client got the committed keyed event and the marker, not the rolled-back one'
  )
  onB.close()
  const resumed = await connect(`${b.base}/events`, { 'last-event-id': first })
  await until(() => resumed.events.at(-1)?.id === marker, 5000, 'the resume')
  t.same(
    resumed.events.map((e) => e.data),
    ['<p>marker</p>'],
    'a resume after the first keyed event: only the marker'
  )
  resumed.close()
  const rows = await admin.query(`SELECT id::text FROM "${table}" WHERE key = 'k' ORDER BY id`)
  t.same(
    rows.rows.map((r) => `${first.slice(0, first.indexOf('-'))}-${r.id}`),
    [first],
    `only the committed keyed row is in the table (${rolledBack} never is)`
  )
})
