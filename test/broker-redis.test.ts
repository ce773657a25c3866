import Fastify from 'fastify'
import { createClient, RESP_TYPES } from 'redis'
import t from 'tap'
import { redisBroker } from '../lib/broker/redis.js'
import htmlSse from '../lib/index.js'
import { brokerContract } from './helpers/broker-contract.js'
import { deleteKeys, privateRedis, REDIS_URL, recordingLogger, uniquePrefix, until } from './helpers/redis.js'

const UNAVAILABLE = 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE'
const prefixes = new Set<string>()
t.teardown(() => deleteKeys(prefixes))

const prefixOf = (space: string) => {
  const prefix = `test:${space}:`
  prefixes.add(prefix)
  return prefix
}

brokerContract(
  t,
  'redisBroker({ url })',
  async ({ space, replay }) =>
    redisBroker({ url: REDIS_URL, prefix: prefixOf(space), ...(replay === undefined ? {} : { replay }) }),
  { shared: true }
)

// A client of the app's own, speaking RESP2 (the default is RESP3): replies of both shapes are read.
const given = createClient({ url: REDIS_URL, RESP: 2 })
given.on('error', () => {})
await given.connect()
t.teardown(() => given.destroy())

brokerContract(
  t,
  'redisBroker({ client }) over RESP2',
  async ({ space, replay }) =>
    redisBroker({ client: given, prefix: prefixOf(space), ...(replay === undefined ? {} : { replay }) }),
  { shared: true }
)

// A client whose replies are Buffers (a type mapping of the app's).
const buffers = given.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })

brokerContract(
  t,
  'redisBroker({ client }) with Buffer replies',
  async ({ space, replay }) =>
    redisBroker({ client: buffers, prefix: prefixOf(space), ...(replay === undefined ? {} : { replay }) }),
  { shared: true }
)

t.test('a key that is not a stream: coded errors, one log line, and the reader resumes once it is fixed', async (t) => {
  const prefix = prefixOf(uniquePrefix())
  const { lines, logger } = recordingLogger()
  const broker = redisBroker({ url: REDIS_URL, prefix, blockMs: 50 })
  broker.useLogger(logger)
  t.teardown(() => broker.close())
  const seen: string[] = []
  await broker.listen(() => {
    throw new Error('a listener that throws')
  })
  await broker.listen((event) => seen.push(event.id))
  await given.sendCommand(['SET', `${prefix}log`, 'not a stream'])
  await t.rejects(broker.publish('a', 'data: x\n\n'), { code: UNAVAILABLE, message: /WRONGTYPE/ })
  await t.rejects(broker.replay(['a'], '1-1'), { code: UNAVAILABLE, message: /WRONGTYPE/ })
  await until(() => lines.length > 0, 3000, 'the read error to be logged')
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.same(
    lines.map((l) => l.level),
    ['error'],
    'the failing read is logged once, not at each retry'
  )
  t.match(lines[0]?.msg, /reading the Redis stream .* failed/)
  await given.sendCommand(['DEL', `${prefix}log`])
  const id = await broker.publish('a', 'data: y\n\n')
  await until(() => seen.length === 1, 5000, 'the reader to resume')
  t.same(seen, [id], 'delivery resumed by itself, past a listener that throws')
  t.match(lines.at(-1), { level: 'error', msg: /a broker listener threw/ }, 'the throwing listener is logged')
})

t.test('a replay reuses the frames the read loop built: one Buffer per event per instance', async (t) => {
  const broker = redisBroker({ url: REDIS_URL, prefix: prefixOf(uniquePrefix()) })
  t.teardown(() => broker.close())
  const live: Buffer[] = []
  await broker.listen((event) => live.push(event.frame))
  const first = await broker.publish('a', 'data: 1\n\n')
  await broker.publish('a', 'data: 2\n\n')
  await until(() => live.length === 2, 3000, 'two live events')
  const replay = await broker.replay(['a'], first)
  t.equal(replay.found && replay.events[0]?.frame, live[1], 'the replayed frame is the very Buffer delivered live')
})

t.test('the broker closes the connections it made and leaves a given client open', async (t) => {
  const redis = await privateRedis(t)
  const admin = createClient({ url: redis.url })
  admin.on('error', () => {})
  await admin.connect()
  t.teardown(() => admin.destroy())
  const clients = async () => {
    const info = String(await admin.sendCommand(['INFO', 'clients']))
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

  const own = redisBroker({ url: redis.url, prefix: 'own:' })
  await own.listen(() => {})
  await own.publish('a', 'data: x\n\n')
  t.equal(
    await settles(alone + 2),
    alone + 2,
    'a broker of a url opens two connections: commands and the blocking read'
  )
  await own.close()
  t.equal(await settles(alone), alone, 'and closes both')

  const mine = createClient({ url: redis.url })
  mine.on('error', () => {})
  await mine.connect()
  t.teardown(() => mine.destroy())
  const lent = redisBroker({ client: mine, prefix: 'lent:' })
  await lent.listen(() => {})
  await lent.publish('a', 'data: y\n\n')
  t.equal(
    await settles(alone + 2),
    alone + 2,
    'a broker of a given client adds only its duplicate for the blocking read'
  )
  await lent.close()
  t.equal(await settles(alone + 1), alone + 1, 'close drops the duplicate')
  t.ok(mine.isReady, 'the given client is still open')
  t.equal(String(await mine.sendCommand(['PING'])), 'PONG', 'and usable')
})

t.test('an unreachable Redis: listen, publish and the app start fail at once with the coded error', async (t) => {
  const redis = await privateRedis(t)
  await redis.kill()
  const broker = redisBroker({ url: redis.url })
  const start = Date.now()
  await t.rejects(
    broker.listen(() => {}),
    { code: UNAVAILABLE, message: /cannot connect to Redis at 127\.0\.0\.1:/ }
  )
  await t.rejects(broker.publish('a', 'data: x\n\n'), { code: UNAVAILABLE })
  await t.rejects(broker.replay(['a'], '1-1'), { code: UNAVAILABLE })
  t.ok(Date.now() - start < 3000, 'without retrying (a retrying client would never settle)')
  await broker.close()

  const app = Fastify()
  void app.register(htmlSse, { broker: redisBroker({ url: redis.url }) })
  await t.rejects(
    async () => {
      await app.ready()
    },
    { code: UNAVAILABLE },
    'the app does not start'
  )
  await app.close()
})

t.test('options are checked', async (t) => {
  const invalid = { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' }
  t.throws(() => redisBroker({ url: REDIS_URL, client: given }), invalid, 'url and client together')
  t.throws(() => redisBroker({ url: 6379 as unknown as string }), invalid, 'a url that is not a string')
  t.throws(() => redisBroker({ client: {} as typeof given }), invalid, 'a client that is not a node-redis client')
  t.throws(() => redisBroker({ prefix: 1 as unknown as string }), invalid, 'a prefix that is not a string')
  t.throws(() => redisBroker({ replay: -1 }), invalid, 'a negative replay')
  t.throws(() => redisBroker({ replay: 1.5 }), invalid, 'a fractional replay')
  t.throws(() => redisBroker({ logger: {} as never }), invalid, 'a logger without methods')
  t.throws(() => redisBroker({ blockMs: 0 }), invalid, 'a blockMs of 0 (XREAD BLOCK 0 waits forever)')
  t.throws(() => redisBroker(null as never), invalid, 'options that are not an object')
})
