import { spawnSync } from 'node:child_process'
import Fastify from 'fastify'
import { createClient, RESP_TYPES } from 'redis'
import t from 'tap'
import { redisBroker } from '../lib/broker/redis.js'
import type { BrokerEvent, BrokerReplay } from '../lib/broker/types.js'
import htmlSse from '../lib/index.js'
import { brokerContract } from './helpers/broker-contract.js'
import { commandCalls, privateRedis, recordingLogger, uniquePrefix } from './helpers/redis.js'
import { until } from './helpers/sse.js'

const UNAVAILABLE = 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE'
const redis = await privateRedis(t)
const url = redis.url
const prefixOf = (space: string) => `test:${space}:`

const admin = createClient({ url })
admin.on('error', () => {})
await admin.connect()
t.teardown(() => admin.destroy())

/** How many times Redis ran `command` so far, and how many of those failed. */
const calls = (command: string) => commandCalls(admin, command)

brokerContract(
  t,
  'redisBroker({ url })',
  async ({ space, replay }) =>
    redisBroker({ url, prefix: prefixOf(space), ...(replay === undefined ? {} : { replay }) }),
  { shared: true, batches: true }
)

// A client of the app's own, speaking RESP2 (the default is RESP3): replies of both shapes are read.
const given = createClient({ url, RESP: 2 })
given.on('error', () => {})
await given.connect()
t.teardown(() => given.destroy())

brokerContract(
  t,
  'redisBroker({ client }) over RESP2',
  async ({ space, replay }) =>
    redisBroker({ client: given, prefix: prefixOf(space), ...(replay === undefined ? {} : { replay }) }),
  { shared: true, batches: true }
)

// A client whose replies are Buffers (a type mapping of the app's).
const buffers = given.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })

brokerContract(
  t,
  'redisBroker({ client }) with Buffer replies',
  async ({ space, replay }) =>
    redisBroker({ client: buffers, prefix: prefixOf(space), ...(replay === undefined ? {} : { replay }) }),
  { shared: true, batches: true }
)

t.test('a key that is not a stream: coded errors, one log line, and the reader resumes once it is fixed', async (t) => {
  const prefix = uniquePrefix()
  const { lines, logger } = recordingLogger()
  const broker = redisBroker({ url, prefix, blockMs: 50 })
  broker.useLogger(logger)
  t.teardown(() => broker.close())
  const seen: string[] = []
  await broker.listen(() => {
    throw new Error('a listener that throws')
  })
  await broker.listen((event) => seen.push(event.id))
  const before = await calls('xread')
  await admin.sendCommand(['SET', `${prefix}log`, 'not a stream'])
  await t.rejects(broker.publish('a', 'data: x\n\n'), { code: UNAVAILABLE, message: /WRONGTYPE/ })
  await t.rejects(broker.replay(['a'], '1-1'), { code: UNAVAILABLE, message: /WRONGTYPE/ })
  // Wait until Redis itself saw the reader fail three times.
  const end = Date.now() + 10_000
  while ((await calls('xread')).failed < before.failed + 3) {
    if (Date.now() > end) throw new Error('the reader did not retry')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.same(
    lines.map((l) => l.level),
    ['error'],
    'three failed reads, one log line'
  )
  t.match(lines[0]?.msg, /reading the Redis stream .* failed/)
  await admin.sendCommand(['DEL', `${prefix}log`])
  const id = await broker.publish('a', 'data: y\n\n')
  await until(() => seen.length === 1, 5000, 'the reader to resume')
  t.same(seen, [id], 'delivery resumed by itself, past a listener that throws')
  t.match(lines.at(-1), { level: 'error', msg: /a broker listener threw/ }, 'the throwing listener is logged')
})

t.test(
  "replays from the empty log's id 0-0: from the window when it holds the whole stream, else one shared XRANGE",
  async (t) => {
    const prefix = uniquePrefix()
    const broker = redisBroker({ url, prefix })
    t.teardown(() => broker.close())
    const live: BrokerEvent[] = []
    await broker.listen((event) => {
      live.push(event)
    })
    t.equal(await broker.lastId(), '0-0', 'an empty stream')
    const ids: string[] = []
    for (let i = 0; i < 4; i++) ids.push(await broker.publish(i % 2 ? 'a' : 'b', `data: ${i}\n\n`))
    await until(() => live.length === 4, 5000, 'four live events')
    let before = await calls('xrange')
    const fromWindow = await Promise.all(Array.from({ length: 50 }, () => broker.replay(['a'], '0-0')))
    t.equal(
      (await calls('xrange')).calls - before.calls,
      0,
      '50 replays from 0-0 on a reader that saw the stream begin: no XRANGE'
    )
    t.ok(
      fromWindow.every(
        (r) => r.found && JSON.stringify(r.events.map((e) => e.id)) === JSON.stringify([ids[1], ids[3]])
      ),
      'each got the events of its topic since the start'
    )

    // An instance that started after the first events: its window does not reach back to the start.
    const later = redisBroker({ url, prefix })
    t.teardown(() => later.close())
    const seen: BrokerEvent[] = []
    await later.listen((event) => {
      seen.push(event)
    })
    ids.push(await later.publish('a', 'data: 4\n\n'))
    await until(() => seen.length === 1, 5000, 'the later instance delivering')
    before = await calls('xrange')
    const fromRedis = await Promise.all(Array.from({ length: 50 }, () => later.replay(['a'], '0-0')))
    t.equal((await calls('xrange')).calls - before.calls, 1, '50 concurrent replays from 0-0 share one XRANGE')
    t.ok(
      fromRedis.every(
        (r) => r.found && JSON.stringify(r.events.map((e) => e.id)) === JSON.stringify([ids[1], ids[3], ids[4]])
      ),
      'each got every event of its topic since the start'
    )
  }
)

t.test('replays: from the recent window without Redis, also for events from before the instance started', async (t) => {
  const prefix = uniquePrefix()
  const early = redisBroker({ url, prefix })
  t.teardown(() => early.close())
  const old: string[] = []
  for (let i = 0; i < 10; i++) old.push(await early.publish('a', `data: old ${i}\n\n`))

  const broker = redisBroker({ url, prefix })
  t.teardown(() => broker.close())
  const live: BrokerEvent[] = []
  await broker.listen((event) => {
    live.push(event)
  })
  const recent: string[] = []
  for (let i = 0; i < 5; i++) recent.push(await broker.publish(i % 2 ? 'a' : 'b', `data: new ${i}\n\n`))
  await until(() => live.length === 5, 5000, 'five live events')

  let before = await calls('xrange')
  const fromWindow = await Promise.all(Array.from({ length: 50 }, () => broker.replay(['a', 'b'], recent[0] as string)))
  t.equal((await calls('xrange')).calls - before.calls, 0, '50 replays of an id in the window: no XRANGE')
  t.ok(
    fromWindow.every((r) => r.found && r.events.length === 4 && r.events[0]?.frame === live[1]?.frame),
    'each got the four later events, as the very Buffers delivered live'
  )

  before = await calls('xrange')
  const fromRedis = await Promise.all(Array.from({ length: 50 }, () => broker.replay(['a'], old[3] as string)))
  t.equal(
    (await calls('xrange')).calls - before.calls,
    0,
    '50 replays of an id from before this instance started: no XRANGE (the window was filled at start)'
  )
  const expected = [...old.slice(4), recent[1], recent[3]]
  t.ok(
    fromRedis.every((r) => r.found && JSON.stringify(r.events.map((e) => e.id)) === JSON.stringify(expected)),
    'each got the six older events of a and the two recent ones'
  )
  const reused = fromRedis[0]?.found && fromRedis[0].events.at(-1)?.frame
  t.equal(reused, live[3]?.frame, 'an event the reader delivered is served with its Buffer')

  before = await calls('xrevrange')
  t.equal(await broker.lastId(), recent[4], 'lastId from the reader')
  t.equal((await calls('xrevrange')).calls - before.calls, 0, 'without a command while the reader is current')
})

t.test('replays while the reader is mid-batch: bounded at what it delivered', async (t) => {
  const prefix = uniquePrefix()
  const key = `${prefix}log`
  const old = String(await admin.sendCommand(['XADD', key, '*', 't', 'a', 'b', 'data: old\n\n']))
  const broker = redisBroker({ url, prefix })
  t.teardown(() => broker.close())
  const checks: Record<string, Promise<unknown>> = {}
  let x = ''
  let y = ''
  await broker.listen((event) => {
    if (event.id === x) {
      checks.newer = broker.replay(['a'], y)
      checks.future = broker.replay(['a'], `${Number(y.split('-')[0]) + 1000}-0`)
      checks.atX = broker.replay(['a'], old)
    } else if (event.id === y) {
      checks.atY = broker.replay(['a'], old)
    }
  })
  // Two entries in one batch: while X is being delivered, the reader has not delivered Y.
  const now = Number(old.split('-')[0]) + 1
  x = `${now}-0`
  y = `${now}-1`
  const before = await calls('xrange')
  await admin
    .multi()
    .addCommand(['XADD', key, x, 't', 'a', 'b', 'data: x\n\n'])
    .addCommand(['XADD', key, y, 't', 'a', 'b', 'data: y\n\n'])
    .exec()
  await until(() => checks.atY !== undefined, 5000, 'both events')
  t.same(
    await checks.newer,
    { found: true, events: [] },
    'an id the reader has not delivered yet: found, nothing to send'
  )
  t.same(
    await checks.future,
    { found: false, head: y },
    'an id Redis never had: a reset at the reader position when it answers'
  )
  const ids = (r: unknown) => (r as { events: Array<{ id: string }> }).events.map((e) => e.id)
  t.same(ids(await checks.atX), [x], 'a replay asked while X was delivered ends at X')
  t.same(ids(await checks.atY), [x, y], 'one asked while Y was delivered ends at Y')
  t.equal(
    (await calls('xrange')).calls - before.calls,
    2,
    'the old id from the window, one XRANGE per newer id checked'
  )
})

t.test('concurrent resumes of ids newer than the reader position share one XRANGE per id', async (t) => {
  const prefix = uniquePrefix()
  const key = `${prefix}log`
  const old = String(await admin.sendCommand(['XADD', key, '*', 't', 'a', 'b', 'data: old\n\n']))
  const broker = redisBroker({ url, prefix })
  t.teardown(() => broker.close())
  const now = Number(old.split('-')[0]) + 1
  const x = `${now}-0`
  const y = `${now}-1`
  const never = `${now + 1000}-0`
  const many = (id: string) => Array.from({ length: 2000 }, () => broker.replay(['a'], id))
  let storm: Promise<[BrokerReplay[], BrokerReplay[]]> | undefined
  await broker.listen((event) => {
    // While X is delivered, Y (in the same batch) is newer than the reader's position: a reconnect
    // storm of clients that got Y from another instance, and of clients with an id Redis never had.
    if (event.id === x) storm = Promise.all([Promise.all(many(y)), Promise.all(many(never))])
  })
  const before = await calls('xrange')
  await admin
    .multi()
    .addCommand(['XADD', key, x, 't', 'a', 'b', 'data: x\n\n'])
    .addCommand(['XADD', key, y, 't', 'a', 'b', 'data: y\n\n'])
    .exec()
  await until(() => storm !== undefined, 5000, 'the storm')
  const [newer, unknown] = await (storm as Promise<[BrokerReplay[], BrokerReplay[]]>)
  t.equal(
    (await calls('xrange')).calls - before.calls,
    2,
    '4,000 concurrent resumes of two ids newer than the position: one XRANGE per id'
  )
  t.ok(
    newer.every((r) => r.found && r.events.length === 0),
    'each resume of the id Redis has: found, its events come live'
  )
  t.ok(
    unknown.every((r) => !r.found && r.head === y),
    'each resume of the id Redis never had: a reset at the reader position'
  )
  // Shared while the command runs, not remembered: a later resume asks again.
  const again = await calls('xrange')
  t.same(await broker.replay(['a'], never), { found: false, head: y }, 'a later resume of the unknown id')
  t.equal((await calls('xrange')).calls - again.calls, 1, 'is checked afresh')
})

t.test('a reader that fell behind the trimmed stream calls onGap with the head, then goes on', async (t) => {
  const prefix = uniquePrefix()
  const key = `${prefix}log`
  const broker = redisBroker({ url, prefix })
  t.teardown(() => broker.close())
  const order: Array<string | { gap: string | null }> = []
  await broker.listen(
    (event) => {
      order.push(event.id)
    },
    (head) => order.push({ gap: head })
  )
  const first = await broker.publish('a', 'data: first\n\n')
  await until(() => order.length === 1, 5000, 'the first event')
  // spawnSync stalls this process (as a GC pause or a CPU spike would) while
  // another client adds 5,000 entries, trimming to about 1,000.
  const input = Array.from({ length: 5000 }, (_, i) => `XADD ${key} MAXLEN ~ 1000 * t a b "data: ${i}\\n\\n"`).join(
    '\n'
  )
  const cli = spawnSync('redis-cli', ['-p', String(redis.port)], { input: `${input}\n`, encoding: 'utf8' })
  t.equal(cli.status, 0, 'redis-cli ran')
  const added = cli.stdout.trim().split('\n')
  t.equal(added.length, 5000, '5,000 entries added')
  const head = added.at(-1) as string
  // The reader notices the gap by itself; what is published after it arrives.
  await until(() => order.some((x) => typeof x !== 'string'), 5000, 'the gap')
  const marker = await broker.publish('a', 'data: marker\n\n')
  await until(() => order.at(-1) === marker, 5000, 'the marker')
  const gaps = order.filter((x) => typeof x !== 'string')
  t.same(gaps, [{ gap: head }], 'one gap, carrying the newest id')
  const at = order.findIndex((x) => typeof x !== 'string')
  const before = order.slice(0, at) as string[]
  t.same(before, [first, ...added].slice(0, before.length), 'before the gap: every event in order, none skipped')
  t.same(order.slice(at + 1), [marker], 'after it: only what followed the head')
  t.same(
    await broker.replay(['a'], head),
    { found: true, events: [{ id: marker, topic: 'a', frame: Buffer.from(`id: ${marker}\ndata: marker\n\n`) }] },
    'a resume from the head gets the marker'
  )
  // The window was forgotten at the gap: an id Redis still holds is read from Redis, once for all.
  const xrangeBefore = await calls('xrange')
  const resumes = await Promise.all(Array.from({ length: 50 }, () => broker.replay(['a'], added[4500] as string)))
  t.equal(
    (await calls('xrange')).calls - xrangeBefore.calls,
    1,
    '50 concurrent replays of an id before the gap: one XRANGE'
  )
  t.ok(
    resumes.every(
      (r) => r.found && JSON.stringify(r.events.map((e) => e.id)) === JSON.stringify([...added.slice(4501), marker])
    ),
    'each got every later event, up to what the reader delivered'
  )
})

t.test('a position trimmed while the stream was idle is not a gap', async (t) => {
  const prefix = uniquePrefix()
  const key = `${prefix}log`
  // Small stream nodes, so trimming (which removes whole nodes) is exact here.
  await admin.sendCommand(['CONFIG', 'SET', 'stream-node-max-entries', '10'])
  t.teardown(() => admin.sendCommand(['CONFIG', 'SET', 'stream-node-max-entries', '100']))
  const broker = redisBroker({ url, prefix, retentionMs: 100 })
  t.teardown(() => broker.close())
  const seen: string[] = []
  const gaps: Array<string | null> = []
  await broker.listen(
    (event) => {
      seen.push(event.id)
    },
    (head) => gaps.push(head)
  )
  const ids: string[] = []
  for (let i = 0; i < 100; i++) ids.push(await broker.publish('a', `data: ${i}\n\n`))
  await until(() => seen.length === 100, 5000, 'the first events')
  // Wait on Redis's clock until every entry is older than retentionMs.
  const lastMs = Number((ids.at(-1) as string).split('-')[0])
  const redisMs = async () => Number(((await admin.sendCommand(['TIME'])) as string[])[0]) * 1000
  let now = await redisMs()
  const end = Date.now() + 5000
  while (now < lastMs + 300) {
    if (Date.now() > end) throw new Error('Redis time did not move')
    await new Promise((resolve) => setTimeout(resolve, 20))
    now = await redisMs()
  }
  // Two entries at once, the second trimming everything before the first, the reader's position included.
  const late = `${now}-0`
  const later = `${now}-1`
  const replies = await admin
    .multi()
    .addCommand(['XADD', key, late, 't', 'a', 'b', 'data: late\n\n'])
    .addCommand(['XADD', key, 'MINID', '~', String(now - 100), later, 't', 'a', 'b', 'data: later\n\n'])
    .exec()
  t.same(replies, [late, later], 'both added')
  t.equal(Number(await admin.sendCommand(['XLEN', key])), 2, 'every older entry was trimmed, the position too')
  await until(() => seen.at(-1) === later, 5000, 'the later event')
  t.same(gaps, [], 'no gap: nothing after the position was removed')
  t.same(seen, [...ids, late, later], 'every event once, in order')
})

t.test('the broker closes the connections it made and leaves a given client open', async (t) => {
  const own = await privateRedis(t)
  const watch = createClient({ url: own.url })
  watch.on('error', () => {})
  await watch.connect()
  t.teardown(() => watch.destroy())
  const clients = async () => {
    const info = String(await watch.sendCommand(['INFO', 'clients']))
    return Number(/connected_clients:(\d+)/.exec(info)?.[1])
  }
  // The server notices a closed connection a moment later: poll.
  const settles = async (n: number) => {
    const end = Date.now() + 3000
    let seen = await clients()
    while (seen !== n && Date.now() < end) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      seen = await clients()
    }
    return seen
  }
  const alone = await clients()

  const mine = redisBroker({ url: own.url, prefix: 'own:' })
  await mine.listen(() => {})
  await mine.publish('a', 'data: x\n\n')
  t.equal(
    await settles(alone + 2),
    alone + 2,
    'a broker of a url opens two connections: commands and the blocking read'
  )
  await mine.close()
  t.equal(await settles(alone), alone, 'and closes both')

  const client = createClient({ url: own.url })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => client.destroy())
  const lent = redisBroker({ client, prefix: 'lent:' })
  await lent.listen(() => {})
  await lent.publish('a', 'data: y\n\n')
  t.equal(
    await settles(alone + 2),
    alone + 2,
    'a broker of a given client adds only its duplicate for the blocking read'
  )
  await lent.close()
  t.equal(await settles(alone + 1), alone + 1, 'close drops the duplicate')
  t.ok(client.isReady, 'the given client is still open')
  t.equal(String(await client.sendCommand(['PING'])), 'PONG', 'and usable')
})

t.test(
  'an unreachable Redis: listen, publish, replay, lastId and the app start fail with the coded error',
  async (t) => {
    const gone = await privateRedis(t)
    await gone.kill()
    const broker = redisBroker({ url: gone.url })
    // A client that retried would never settle: these settle, without a retry.
    await t.rejects(
      broker.listen(() => {}),
      { code: UNAVAILABLE, message: /cannot connect to Redis at 127\.0\.0\.1:/ }
    )
    await t.rejects(broker.publish('a', 'data: x\n\n'), { code: UNAVAILABLE })
    await t.rejects(broker.replay(['a'], '1-1'), { code: UNAVAILABLE })
    await t.rejects(broker.lastId(), { code: UNAVAILABLE })
    await broker.close()
    await t.rejects(broker.replay(['a'], '1-1'), { code: UNAVAILABLE }, 'replay after close')
    await t.rejects(broker.lastId(), { code: UNAVAILABLE }, 'lastId after close')
    await t.rejects(
      broker.listen(() => {}),
      { code: UNAVAILABLE },
      'listen after close'
    )

    const app = Fastify()
    void app.register(htmlSse, { broker: redisBroker({ url: gone.url }) })
    await t.rejects(
      async () => {
        await app.ready()
      },
      { code: UNAVAILABLE },
      'the app does not start'
    )
    await app.close()
  }
)

t.test('options are checked', async (t) => {
  const invalid = { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' }
  t.throws(() => redisBroker({ url, client: given }), invalid, 'url and client together')
  t.throws(() => redisBroker({ url: 6379 as unknown as string }), invalid, 'a url that is not a string')
  t.throws(() => redisBroker({ client: {} as typeof given }), invalid, 'a client that is not a node-redis client')
  t.throws(() => redisBroker({ client: null as never }), invalid, 'a null client')
  t.throws(() => redisBroker({ prefix: 1 as unknown as string }), invalid, 'a prefix that is not a string')
  t.throws(() => redisBroker({ replay: -1 }), invalid, 'a negative replay')
  t.throws(() => redisBroker({ replay: 1.5 }), invalid, 'a fractional replay')
  t.throws(() => redisBroker({ logger: {} as never }), invalid, 'a logger without methods')
  t.throws(() => redisBroker({ blockMs: 0 }), invalid, 'a blockMs of 0 (XREAD BLOCK 0 waits forever)')
  t.throws(() => redisBroker({ commandTimeoutMs: 0 }), invalid, 'a commandTimeoutMs of 0')
  t.throws(() => redisBroker({ commandTimeoutMs: 1.5 }), invalid, 'a fractional commandTimeoutMs')
  t.throws(() => redisBroker({ retentionMs: -5 }), invalid, 'a negative retentionMs')
  t.throws(() => redisBroker({ retentionMs: '60s' as never }), invalid, 'a retentionMs that is not a number')
  t.throws(() => redisBroker(null as never), invalid, 'options that are not an object')
})

for (const [name, make] of [
  [
    'a url',
    (prefix: string, replay?: number) => redisBroker({ url, prefix, ...(replay === undefined ? {} : { replay }) })
  ],
  [
    'a given RESP2 client',
    (prefix: string, replay?: number) =>
      redisBroker({ client: given, prefix, ...(replay === undefined ? {} : { replay }) })
  ],
  [
    'a given client with Buffer replies',
    (prefix: string, replay?: number) =>
      redisBroker({ client: buffers, prefix, ...(replay === undefined ? {} : { replay }) })
  ]
] as const) {
  t.test(`keys come back live, from the window, from the start-up window and from XRANGE (${name})`, async (t) => {
    const prefix = uniquePrefix()
    const keyOf = (events: readonly BrokerEvent[]) => events.map((e) => [e.topic, e.key ?? null])
    const live = make(prefix)
    t.teardown(() => live.close())
    const seen: BrokerEvent[] = []
    await live.listen((event) => {
      seen.push(event)
    })
    const first = await live.publish('a', 'data: 0\n\n')
    const ids = [
      await live.publish('a', 'data: 1\n\n', { key: 'job' }),
      await live.publish('a', 'data: 2\n\n'),
      await live.publish('', 'data: control\n\n'),
      await live.publish('b', 'data: 3\n\n', { key: 'job' }),
      await live.publish('a', 'data: 4\n\n', { key: 'other key' })
    ]
    await until(() => seen.length === 6, 5000, 'six live events')
    const expected = [
      ['a', 'job'],
      ['a', null],
      ['', null],
      ['b', 'job'],
      ['a', 'other key']
    ]
    t.same(keyOf(seen.slice(1)), expected, 'live: each event with its key; the control entry (topic "") too')
    t.same(
      seen.filter((e) => e.key === undefined).map((e) => Object.keys(e).sort()),
      [
        ['frame', 'id', 'topic'],
        ['frame', 'id', 'topic'],
        ['frame', 'id', 'topic']
      ],
      'an unkeyed event has no key field'
    )
    const notControl = expected.filter(([topic]) => topic !== '')
    const replayed = (r: BrokerReplay) => (r.found ? keyOf(r.events) : r)
    t.same(replayed(await live.replay(['a', 'b'], first)), notControl, 'from the window: keys; no control entry')

    // Started after the events: its window is filled from Redis at start.
    const later = make(prefix)
    t.teardown(() => later.close())
    await later.listen(() => {})
    const before = await calls('xrange')
    t.same(replayed(await later.replay(['a', 'b'], first)), notControl, 'from the window filled at start')
    t.equal((await calls('xrange')).calls - before.calls, 0, 'without XRANGE')

    // Never listening: no reader, so every replay is an XRANGE.
    const reading = make(prefix, 10)
    t.teardown(() => reading.close())
    t.same(replayed(await reading.replay(['a', 'b'], first)), notControl, 'from XRANGE')
    t.same(replayed(await reading.replay(['a'], '0-0')), [['a', null], ...notControl.filter(([x]) => x === 'a')])
    t.equal((await calls('xrange')).calls - before.calls, 2, 'two XRANGE')
    t.same(ids.length, 5)
    await t.rejects(live.publish('a', 'x', { key: '' }), { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' }, 'an empty key')
    await t.rejects(
      live.publish('a', 'x', { key: 3 as never }),
      { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' },
      'a key that is not a string'
    )
  })

  t.test(`presence: shares of two brokers add up, lapse after their TTL, and are withdrawn (${name})`, async (t) => {
    const prefix = uniquePrefix()
    const a = make(prefix)
    const b = make(prefix)
    t.teardown(() => Promise.all([a.close(), b.close()]))
    const share = (streams: number, members: string[]) => ({ streams, members })
    t.equal(a.presenceRenewal, true, 'every call renews the whole instance')
    const first = await a.sharePresence(
      'A',
      new Map([
        ['room', share(3, ['ann', 'zoe'])],
        ['other', share(1, [])]
      ]),
      12_000
    )
    t.equal(first, false, 'the first call: the instance was not live before')
    t.equal(await a.sharePresence('A', new Map(), 12_000), true, 'a renewal (no topics): it was live')
    await b.sharePresence('B', new Map([['room', share(2, ['Bob', 'ann'])]]), 12_000)
    t.same(await b.presence('room'), { streams: 5, members: ['Bob', 'ann', 'zoe'] }, 'added up, distinct, sorted')
    t.same(await a.presence('other'), { streams: 1, members: [] }, 'streams without members')
    t.same(await a.presence('none'), { streams: 0, members: [] }, 'a topic nobody shares')
    // On Redis's clock: until when A counts; the hash itself never expires (a share lives with its instance).
    const [seconds] = (await admin.sendCommand(['TIME'])) as string[]
    const lapses = Number(await admin.sendCommand(['ZSCORE', `${prefix}presence-instances`, 'A']))
    const ahead = lapses - Number(seconds) * 1000
    t.ok(ahead > 10_000 && ahead <= 13_000, `A counts until 12 s after its last call (${ahead} ms ahead)`)
    t.equal(Number(await admin.sendCommand(['PTTL', `${prefix}presence:room`])), -1, 'the hash has no expiry')
    t.same(
      ((await admin.sendCommand(['SMEMBERS', `${prefix}presence-topics:A`])) as string[]).sort(),
      ['other', 'room'],
      "A's topics, for the sweep"
    )

    await a.sharePresence('A', new Map([['room', null]]), 12_000)
    t.same(await b.presence('room'), { streams: 2, members: ['Bob', 'ann'] }, "a null share withdraws A's share")
    await b.sharePresence('B', new Map([['room', null]]), 12_000)
    t.equal(Number(await admin.sendCommand(['EXISTS', `${prefix}presence:room`])), 0, 'the last withdrawal')

    // An instance that is not renewed lapses with all its shares; a read deletes its fields, a renewal the rest.
    await b.sharePresence('B', new Map([['other', share(4, ['cid'])]]), 1500)
    t.same(await a.presence('other'), { streams: 5, members: ['cid'] }, 'a short-lived share counts')
    await until(async () => (await a.presence('other')).streams === 1, 10_000, 'the short share to lapse')
    t.same(await a.presence('other'), { streams: 1, members: [] }, 'it lapsed by itself')
    await until(
      async () => Number(await admin.sendCommand(['HEXISTS', `${prefix}presence:other`, 'B'])) === 0,
      10_000,
      'the lapsed share to be deleted by the read'
    )
    t.equal(
      Number(await admin.sendCommand(['HEXISTS', `${prefix}presence:other`, 'A'])),
      1,
      'a presence call deleted the lapsed share, and only it'
    )
    await a.sharePresence('A', new Map(), 12_000)
    await until(
      async () => (await admin.sendCommand(['ZSCORE', `${prefix}presence-instances`, 'B'])) === null,
      10_000,
      "A's renewal to sweep the lapsed B"
    )
    t.equal(Number(await admin.sendCommand(['EXISTS', `${prefix}presence-topics:B`])), 0, "B's topic set is gone")
    t.equal(await b.sharePresence('B', new Map(), 12_000), false, 'B, renewed after it lapsed, is told so')
  })
}

t.test('presence follows Redis clock, not the hosts: skewed instances agree on what counts', async (t) => {
  const prefix = uniquePrefix()
  const reader = redisBroker({ url, prefix })
  const behind = redisBroker({ url, prefix })
  const ahead = redisBroker({ url, prefix })
  t.teardown(() => Promise.all([reader.close(), behind.close(), ahead.close()]))
  const realNow = Date.now
  /** Runs `share` on a host whose clock is `skew` ms off. */
  const skewed = async (skew: number, share: () => Promise<unknown>) => {
    Date.now = () => realNow() + skew
    try {
      await share()
    } finally {
      Date.now = realNow
    }
  }
  // A host 60 s behind: with its own clock, its 12 s share would have lapsed before it was written.
  await skewed(-60_000, () =>
    behind.sharePresence('behind', new Map([['room', { streams: 1, members: ['b'] }]]), 12_000)
  )
  t.same(await reader.presence('room'), { streams: 1, members: ['b'] }, 'a host behind: its share counts')
  // A host 60 s ahead: with its own clock, its 1.5 s share would count for a minute.
  await skewed(60_000, () => ahead.sharePresence('ahead', new Map([['room', { streams: 2, members: ['a'] }]]), 1500))
  t.same(await reader.presence('room'), { streams: 3, members: ['a', 'b'] }, 'a host ahead: its share counts')
  await until(async () => (await reader.presence('room')).streams === 1, 10_000, "the ahead host's share to lapse")
  t.same(await reader.presence('room'), { streams: 1, members: ['b'] }, 'and lapses after its TTL on Redis clock')
})

t.test('presence costs a fixed number of commands per call, whatever the streams', async (t) => {
  const prefix = uniquePrefix()
  const broker = redisBroker({ url, prefix })
  t.teardown(() => broker.close())
  const names = ['multi', 'exec', 'hset', 'sadd', 'hdel', 'srem', 'zscore', 'zadd', 'zrangebyscore', 'time']
  names.push('hgetall', 'zrange', 'eval')
  const none = Object.fromEntries(names.map((name) => [name, 0]))
  const renewal = { zscore: 1, zadd: 1, zrangebyscore: 1, time: 1 }
  const count = async () => {
    const out: Record<string, number> = {}
    for (const name of names) out[name] = (await calls(name)).calls
    return out
  }
  const delta = (a: Record<string, number>, b: Record<string, number>) =>
    Object.fromEntries(names.map((name) => [name, (b[name] as number) - (a[name] as number)]))
  const many = Array.from({ length: 5000 }, (_, i) => `member-${i}`)
  let before = await count()
  await broker.sharePresence('I', new Map([['x', { streams: 5000, members: many }]]), 12_000)
  t.same(
    delta(before, await count()),
    { ...none, ...renewal, hset: 1, sadd: 1, time: 2 },
    'the first share: one TIME to learn the clock, then one pipeline'
  )
  before = await count()
  await broker.sharePresence(
    'I',
    new Map([
      ['x', { streams: 4999, members: many.slice(1) }],
      ['y', { streams: 1, members: ['z'] }],
      ['w', null]
    ]),
    12_000
  )
  t.same(
    delta(before, await count()),
    { ...none, ...renewal, hset: 2, sadd: 2, hdel: 1, srem: 1 },
    'three topics: one pipeline, 2n + 4 commands'
  )
  before = await count()
  await broker.sharePresence('I', new Map(), 12_000)
  t.same(delta(before, await count()), { ...none, ...renewal }, 'a renewal: 4 commands, whatever the topics')
  before = await count()
  const p = await broker.presence('x')
  t.equal(p.streams, 4999)
  t.equal(p.members.length, 4999)
  t.same(
    delta(before, await count()),
    { ...none, time: 1, hgetall: 1, zrange: 1 },
    'presence: TIME, HGETALL and ZRANGE of the instances'
  )
})

t.test('presence: a frozen Redis, a wrong key type and a closed broker reject with the coded error', async (t) => {
  const own = await privateRedis(t)
  const broker = redisBroker({ url: own.url, prefix: 'p:', commandTimeoutMs: 300 })
  const one = new Map([['room', { streams: 1, members: ['ann'] }]])
  await broker.sharePresence('I', one, 12_000)
  own.pause()
  await t.rejects(broker.sharePresence('I', one, 12_000), { code: UNAVAILABLE, message: /within 300 ms/ }, 'share')
  await t.rejects(broker.presence('room'), { code: UNAVAILABLE, message: /within 300 ms/ }, 'presence')
  own.resume()
  await until(
    () =>
      broker.presence('room').then(
        (p) => p.streams === 1,
        () => false
      ),
    10_000,
    'presence to answer again'
  )
  t.same(await broker.presence('room'), { streams: 1, members: ['ann'] }, 'answers again once Redis does')
  const other = createClient({ url: own.url })
  other.on('error', () => {})
  await other.connect()
  await other.set('p:presence:text', 'not a hash')
  // Fields the broker did not write (another version, a hand edit) count for nothing and are left alone.
  await other.hSet('p:presence:room', { junk: 'not json', odd: '{"streams":"2"}', none: 'null' })
  t.same(await broker.presence('room'), { streams: 1, members: ['ann'] }, 'fields that are not shares are ignored')
  // Fields of an earlier version carry their own expiry: counted until it, deleted a TTL after it.
  const earlier = (until: number) => JSON.stringify({ streams: 2, members: ['old'], until, ttl: 12_000 })
  await other.hSet('p:presence:room', { live: earlier(Date.now() + 60_000), gone: earlier(Date.now() - 30_000) })
  t.same(await broker.presence('room'), { streams: 3, members: ['ann', 'old'] }, "an earlier version's live share")
  await until(async () => !(await other.hExists('p:presence:room', 'gone')), 5000, 'the long-lapsed one to go')
  t.ok(await other.hExists('p:presence:room', 'junk'), 'what is no share is left alone')
  await other.hDel('p:presence:room', 'live')
  other.destroy()
  await t.rejects(
    broker.sharePresence('I', new Map([['text', { streams: 1, members: [] }]]), 12_000),
    { code: UNAVAILABLE, message: /WRONGTYPE/ },
    'a key that is not a hash'
  )
  await t.rejects(broker.presence('text'), { code: UNAVAILABLE, message: /WRONGTYPE/ })
  await t.rejects(broker.sharePresence('', one, 12_000), { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' }, 'no instance')
  await broker.close()
  await t.rejects(broker.sharePresence('I', one, 12_000), { code: UNAVAILABLE }, 'share after close')
  await t.rejects(broker.presence('room'), { code: UNAVAILABLE }, 'presence after close')
})

t.test("sharing presence on the app's own client leaves the app's WATCH in place", async (t) => {
  const client = createClient({ url })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => client.destroy())
  const prefix = uniquePrefix()
  const broker = redisBroker({ client, prefix })
  t.teardown(() => broker.close())
  const watched = `${prefix}watched`
  await client.sendCommand(['WATCH', watched])
  await broker.sharePresence('I', new Map([['room', { streams: 1, members: [] }]]), 12_000)
  t.same(await broker.presence('room'), { streams: 1, members: [] }, 'shared meanwhile')
  await admin.sendCommand(['SET', watched, 'changed by another client'])
  const queued = [
    client.sendCommand(['MULTI']),
    client.sendCommand(['SET', watched, 'mine']),
    client.sendCommand(['EXEC'])
  ]
  t.equal((await Promise.all(queued))[2], null, "the app's transaction aborts, as its WATCH asks")
  t.equal(String(await admin.sendCommand(['GET', watched])), 'changed by another client')
})

t.test('a given client without multi(): presence sends its commands one by one, same replies', async (t) => {
  // A node-redis client seen through an object that hides multi(), as a structural RedisClient may be.
  const bare = Object.create(given, { multi: { value: undefined } }) as typeof given
  const prefix = uniquePrefix()
  const broker = redisBroker({ client: bare, prefix })
  t.teardown(() => broker.close())
  const before = (await calls('hset')).calls
  await broker.sharePresence(
    'I',
    new Map([
      ['a', { streams: 2, members: ['x'] }],
      ['b', { streams: 1, members: [] }]
    ]),
    12_000
  )
  t.equal((await calls('hset')).calls - before, 2, 'one HSET per topic')
  t.same(await broker.presence('a'), { streams: 2, members: ['x'] })
  await admin.sendCommand(['SET', `${prefix}presence:c`, 'not a hash'])
  await t.rejects(
    broker.sharePresence('I', new Map([['c', { streams: 1, members: [] }]]), 12_000),
    { code: UNAVAILABLE, message: /WRONGTYPE/ },
    'a refused command rejects the share'
  )
})
