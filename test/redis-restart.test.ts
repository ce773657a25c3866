import { createClient } from 'redis'
import t from 'tap'
import { redisBroker } from '../lib/broker/redis.js'
import { openSse, privateRedis, recordingLogger, redisApp, uniquePrefix, until } from './helpers/redis.js'

const UNAVAILABLE = 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE'

t.test(
  'Redis killed mid-stream and restarted: publishes fail fast, the outage is logged once, delivery resumes',
  async (t) => {
    const redis = await privateRedis(t)
    const prefix = uniquePrefix()
    const { lines, logger } = recordingLogger()
    const { app, base } = await redisApp(redis.url, prefix, logger)
    t.teardown(() => app.close())
    const client = await openSse(`${base}/events?topics=r`)
    t.teardown(() => client.close())
    const before = [
      await app.sse.publish('r', '<p>1</p>'),
      await app.sse.publish('r', '<p>2</p>'),
      await app.sse.publish('r', '<p>3</p>')
    ]
    await client.waitFor(3)

    await redis.kill()
    const killedAt = Date.now()
    let rejected = 0
    let slowest = 0
    // Keep publishing through the outage, as an app would.
    while (Date.now() - killedAt < 700) {
      const start = Date.now()
      await t.rejects(app.sse.publish('r', '<p>lost</p>'), { code: UNAVAILABLE }, 'a publish during the outage')
      slowest = Math.max(slowest, Date.now() - start)
      rejected++
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    t.ok(slowest < 500, `each publish during the outage rejected promptly (slowest ${slowest} ms of ${rejected})`)
    t.equal(lines.filter((l) => l.level === 'warn').length, 1, 'the outage was logged once')
    t.match(lines.find((l) => l.level === 'warn')?.msg, /lost the connection to Redis/)

    await redis.start()
    const restartedAt = Date.now()
    // A stream whose ids went backwards (a new server with a clock behind): the
    // reader must not wait for ids above the last one it saw.
    const raw = createClient({ url: redis.url })
    raw.on('error', () => {})
    await raw.connect()
    t.teardown(() => raw.destroy())
    await raw.sendCommand(['XADD', `${prefix}log`, '5-0', 't', 'r', 'b', 'data: <p>low id</p>\n\n'])

    await until(
      () => lines.some((l) => l.level === 'info' && /reconnected/.test(l.msg)),
      5000,
      'the reconnect log line'
    )
    const reconnectMs = Date.now() - restartedAt
    const back = lines.find((l) => l.level === 'info' && /reconnected/.test(l.msg))?.obj
    t.match(back, { downMs: Number, failedAttempts: Number }, 'the reconnect line says how long Redis was away')
    t.comment(
      `publishes rejected during the outage: ${rejected} (slowest ${slowest} ms); reconnected ${reconnectMs} ms after the restart answered PING; ${JSON.stringify(back)}; log lines: ${lines.map((l) => l.level).join(', ')}`
    )
    const after = await app.sse.publish('r', '<p>after</p>')
    await client.waitFor(5)
    t.same(
      client.events.map((e) => [e.id, e.data]),
      [
        [before[0], '<p>1</p>'],
        [before[1], '<p>2</p>'],
        [before[2], '<p>3</p>'],
        ['5-0', '<p>low id</p>'],
        [after, '<p>after</p>']
      ],
      'the open stream got the events of the new stream by itself, and none of the failed publishes'
    )

    const resumed = await openSse(`${base}/events?topics=r`, { 'last-event-id': before[2] as string })
    t.teardown(() => resumed.close())
    await resumed.waitFor(1)
    t.same(
      resumed.events.map((e) => [e.event, e.id, e.data]),
      [['reset', after, '']],
      'a client with a pre-restart Last-Event-ID gets a reset carrying the newest id'
    )
    const live = await app.sse.publish('r', '<p>live</p>')
    await resumed.waitFor(2)
    t.same(resumed.events[1]?.id, live, 'then live events')
    t.equal(lines.filter((l) => l.level === 'warn').length, 1, 'still one warning for the whole outage')
    t.equal(lines.filter((l) => l.level === 'error').length, 0, 'no error lines')
  }
)

t.test(
  'a frozen Redis (SIGSTOP): the silent reader is noticed, publishes fail fast, delivery resumes on SIGCONT',
  async (t) => {
    const redis = await privateRedis(t)
    const { lines, logger } = recordingLogger()
    const broker = redisBroker({ url: redis.url, prefix: uniquePrefix(), blockMs: 100, logger })
    t.teardown(() => broker.close())
    const seen: string[] = []
    await broker.listen((event) => seen.push(event.id))
    const first = await broker.publish('a', 'data: 1\n\n')
    await until(() => seen.length === 1, 3000, 'the first event')

    redis.freeze()
    const frozenAt = Date.now()
    await until(() => lines.some((l) => l.level === 'warn'), 5000, 'the outage warning')
    const noticedMs = Date.now() - frozenAt
    const start = Date.now()
    await t.rejects(broker.publish('a', 'data: lost\n\n'), { code: UNAVAILABLE }, 'a publish while frozen')
    t.ok(Date.now() - start < 500, 'rejects at once instead of waiting on the silent socket')

    redis.thaw()
    await until(() => lines.some((l) => l.level === 'info' && /reconnected/.test(l.msg)), 5000, 'the reconnect')
    const second = await broker.publish('a', 'data: 2\n\n')
    await until(() => seen.length === 2, 3000, 'the next event')
    t.same(seen, [first, second], 'delivery resumed')
    t.equal(lines.filter((l) => l.level === 'warn').length, 1, 'one warning for the whole outage')
    t.comment(`the frozen server was noticed after ${noticedMs} ms (blockMs 100)`)
  }
)
