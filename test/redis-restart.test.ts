import { createServer, type Socket } from 'node:net'
import { createClient } from 'redis'
import t from 'tap'
import { entriesOf } from '../lib/broker/redis/reply.js'
import { type RedisBroker, redisBroker } from '../lib/broker/redis.js'
import { privateRedis, recordingLogger, redisApp, uniquePrefix } from './helpers/redis.js'
import { connect, until } from './helpers/sse.js'

const UNAVAILABLE = 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE'

t.test(
  'Redis killed mid-stream and restarted: publishes fail with the code, the outage is logged once, delivery resumes',
  async (t) => {
    const redis = await privateRedis(t)
    const prefix = uniquePrefix()
    const { lines, logger } = recordingLogger()
    const { app, base } = await redisApp(redis.url, prefix, logger)
    t.teardown(() => app.close())
    const client = await connect(`${base}/events?topics=r`)
    t.teardown(() => client.close())
    const before = [
      await app.sse.publish('r', '<p>1</p>'),
      await app.sse.publish('r', '<p>2</p>'),
      await app.sse.publish('r', '<p>3</p>')
    ]
    await client.waitFor(3)

    await redis.kill()
    for (let i = 0; i < 5; i++) {
      await t.rejects(app.sse.publish('r', '<p>lost</p>'), { code: UNAVAILABLE }, 'a publish during the outage')
    }
    // Until the reader's connection reports the loss, its position is still the head it last saw.
    const during = await app.sse.lastId().then(
      (id) => id,
      (err: { code?: string }) => err.code
    )
    t.ok(during === UNAVAILABLE || during === before[2], `lastId during the outage: ${during}`)
    // The broker's reconnect attempts land here and are refused, until three were seen.
    let attempts = 0
    const sockets = new Set<Socket>()
    const refuser = createServer((socket) => {
      attempts++
      sockets.add(socket)
      socket.destroy()
    })
    await new Promise<void>((resolve) => refuser.listen(redis.port, '127.0.0.1', resolve))
    await until(() => attempts >= 3, 10_000, 'three reconnect attempts')
    await new Promise((resolve) => refuser.close(resolve))
    t.equal(lines.filter((l) => l.level === 'warn').length, 1, 'the outage was logged once over several attempts')
    t.match(lines.find((l) => l.level === 'warn')?.msg, /lost the connection to Redis/)

    await redis.start()
    // A stream whose ids went backwards (a new server with a clock behind): the
    // reader must not wait for ids above the last one it saw.
    const raw = createClient({ url: redis.url })
    raw.on('error', () => {})
    await raw.connect()
    t.teardown(() => raw.destroy())
    await raw.sendCommand(['XADD', `${prefix}log`, '5-0', 't', 'r', 'b', 'data: <p>low id</p>\n\n'])

    await until(
      () => lines.some((l) => l.level === 'info' && /reconnected/.test(l.msg)),
      10_000,
      'the reconnect log line'
    )
    const back = lines.find((l) => l.level === 'info' && /reconnected/.test(l.msg))?.obj
    t.match(back, { downMs: Number, failedAttempts: Number }, 'the reconnect line says how long Redis was away')
    // The command connection may still be reconnecting: publish until it takes.
    let after: string | null = null
    while (after === null) {
      after = await app.sse.publish('r', '<p>after</p>').catch(() => null)
      if (after === null) await new Promise((resolve) => setTimeout(resolve, 20))
    }
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

    const resumed = await connect(`${base}/events?topics=r`, { 'last-event-id': before[2] as string })
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

/** Publishes until one succeeds (a connection may still be coming back), then returns its id. */
async function publishWhenBack(broker: RedisBroker, body: string): Promise<string> {
  const end = Date.now() + 15_000
  for (;;) {
    try {
      return await broker.publish('a', body)
    } catch (err) {
      if (Date.now() > end) throw err
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
}

for (const mode of ['url', 'client'] as const) {
  t.test(
    `a frozen Redis (SIGSTOP), broker with ${mode}: commands reject with the code, and everything recovers on SIGCONT`,
    async (t) => {
      const redis = await privateRedis(t)
      const { lines, logger } = recordingLogger()
      const prefix = uniquePrefix()
      let options: Parameters<typeof redisBroker>[0] = { url: redis.url }
      if (mode === 'client') {
        const given = createClient({ url: redis.url })
        given.on('error', () => {})
        await given.connect()
        t.teardown(() => given.destroy())
        options = { client: given }
      }
      const broker = redisBroker({ ...options, prefix, blockMs: 200, commandTimeoutMs: 1000, logger })
      t.teardown(() => broker.close())
      const seen: string[] = []
      await broker.listen((event) => {
        seen.push(event.id)
      })
      const first = await broker.publish('a', 'data: 1\n\n')
      await until(() => seen.length === 1, 5000, 'the first event')
      const old = await broker.publish('a', 'data: old\n\n')
      await until(() => seen.length === 2, 5000, 'the second event')

      redis.pause()
      t.teardown(() => {
        try {
          redis.resume()
        } catch {}
      })
      await t.rejects(broker.publish('a', 'data: frozen\n\n'), { code: UNAVAILABLE }, 'publish rejects')
      await t.rejects(broker.publish('a', 'data: frozen again\n\n'), { code: UNAVAILABLE }, 'and again')
      // An id older than the recent window holds needs Redis.
      await t.rejects(broker.replay(['a'], '1-1'), { code: UNAVAILABLE }, 'a replay that needs Redis rejects')
      t.same(
        await broker.replay(['a'], first),
        { found: true, events: [{ id: old, topic: 'a', frame: Buffer.from(`id: ${old}\ndata: old\n\n`) }] },
        'a replay the recent window covers is still served'
      )
      await until(() => lines.some((l) => l.level === 'warn'), 10_000, 'the silent reader to be noticed')
      await t.rejects(broker.lastId(), { code: UNAVAILABLE }, 'lastId rejects once the reader is not current')

      redis.resume()
      const after = await publishWhenBack(broker, 'data: after\n\n')
      await until(() => seen.includes(after), 10_000, 'delivery of the event published after SIGCONT')
      const admin = createClient({ url: redis.url })
      admin.on('error', () => {})
      await admin.connect()
      t.teardown(() => admin.destroy())
      const stream = entriesOf(await admin.sendCommand(['XRANGE', `${prefix}log`, '-', '+'])).map(([id]) => id)
      t.same(seen, stream, 'every event in the stream was delivered once, in order (late frozen publishes included)')
      t.equal(seen.at(-1), after, 'the last is the one published after SIGCONT')
      t.equal(await broker.lastId(), after, 'lastId answers again')
      t.equal(lines.filter((l) => l.level === 'warn').length, 1, 'one warning for the whole outage')
      t.ok(
        lines.some((l) => l.level === 'info' && /reconnected/.test(l.msg)),
        'and an info line when it was back'
      )
    }
  )
}

t.test(
  'a frozen Redis under an app: publish rejects with the code, the open stream resumes after SIGCONT',
  async (t) => {
    const redis = await privateRedis(t)
    const prefix = uniquePrefix()
    const { logger } = recordingLogger()
    const { app, base } = await redisApp(redis.url, prefix, logger, { blockMs: 200, commandTimeoutMs: 1000 })
    t.teardown(() => app.close())
    const client = await connect(`${base}/events?topics=f`)
    t.teardown(() => client.close())
    const first = await app.sse.publish('f', '<p>before</p>')
    await client.waitFor(1)
    redis.pause()
    await t.rejects(app.sse.publish('f', '<p>frozen</p>'), { code: UNAVAILABLE }, 'app.sse.publish rejects')
    redis.resume()
    let after: string | null = null
    const end = Date.now() + 15_000
    while (after === null) {
      after = await app.sse.publish('f', '<p>after</p>').catch((err) => {
        if (Date.now() > end) throw err
        return null
      })
      if (after === null) await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await until(() => client.events.some((e) => e.id === after), 10_000, 'the event published after SIGCONT')
    t.equal(client.events[0]?.id, first, 'the stream kept its first event')
    t.same(
      client.events.filter((e) => e.data === '<p>after</p>').map((e) => e.id),
      [after],
      'and got the new one once, on the same connection'
    )
    t.equal(app.sse.stats().connections, 1, 'the stream stayed open through the freeze')
  }
)

t.test('closing while Redis is frozen settles, and pending commands reject with the code', async (t) => {
  const redis = await privateRedis(t)
  const { logger } = recordingLogger()
  const broker = redisBroker({ url: redis.url, prefix: uniquePrefix(), blockMs: 200, commandTimeoutMs: 1000, logger })
  await broker.listen(() => {})
  await broker.publish('a', 'data: 1\n\n')
  redis.pause()
  t.teardown(() => redis.resume())
  // Queued on the command connection, which close() would wait on for ever.
  const pending = broker.replay(['a'], '1-1')
  await broker.close()
  await t.rejects(pending, { code: UNAVAILABLE }, 'the pending replay rejected')
  await t.rejects(broker.publish('a', 'data: 2\n\n'), { code: UNAVAILABLE }, 'a publish after close rejects')
})
