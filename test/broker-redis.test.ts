import { spawnSync } from 'node:child_process'
import Fastify from 'fastify'
import { createClient, RESP_TYPES } from 'redis'
import t from 'tap'
import { redisBroker } from '../lib/broker/redis.js'
import type { BrokerEvent, BrokerReplay } from '../lib/broker/types.js'
import htmlSse from '../lib/index.js'
import { brokerContract } from './helpers/broker-contract.js'
import { privateRedis, recordingLogger, uniquePrefix } from './helpers/redis.js'
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
async function calls(command: string): Promise<{ calls: number; failed: number }> {
  const info = String(await admin.sendCommand(['INFO', 'commandstats']))
  const line = new RegExp(`cmdstat_${command}:calls=(\\d+).*failed_calls=(\\d+)`).exec(info)
  return { calls: Number(line?.[1] ?? 0), failed: Number(line?.[2] ?? 0) }
}

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
