/**
 * The replay handoff when the broker is slow, failing or skips events: a broker
 * that wraps the memory broker and holds `replay` until the test lets it go.
 */
import { test } from 'tap'
import {
  type Broker,
  type BrokerEvent,
  type BrokerGapListener,
  type BrokerListener,
  type BrokerReplay,
  compareIds,
  FST_ERR_HTML_SSE_BROKER_UNAVAILABLE,
  memoryBroker
} from '../lib/index.js'
import { errorsIn, makeApp, topicsApp } from './helpers/app.js'
import { connect, deferred, listen, until } from './helpers/sse.js'

interface Wrapped {
  broker: Broker
  /** How many replays were answered. */
  answered: () => number
  /** The hub's gap listener, once it listens. */
  gap: () => BrokerGapListener
}

function wrapped(replay: (inner: Broker, topics: readonly string[], lastId: string) => ReturnType<Broker['replay']>) {
  const inner = memoryBroker()
  let answered = 0
  let onGap: BrokerGapListener | undefined
  const broker: Broker = {
    publish: (topic, body) => inner.publish(topic, body),
    replay: async (topics, lastId) => {
      try {
        return await replay(inner, topics, lastId)
      } finally {
        answered++
      }
    },
    lastId: () => inner.lastId(),
    listen: (listener, gapListener) => {
      onGap = gapListener
      return inner.listen(listener)
    },
    unlisten: (listener) => inner.unlisten(listener),
    close: () => inner.close()
  }
  return { broker, answered: () => answered, gap: () => onGap as BrokerGapListener } satisfies Wrapped
}

test('a replay the broker cannot serve keeps the client position: the stream ends with a retry hint, no reset', async (t) => {
  let down = true
  const { broker } = wrapped((inner, topics, lastId) =>
    down ? Promise.reject(new FST_ERR_HTML_SSE_BROKER_UNAVAILABLE('test outage')) : inner.replay(topics, lastId)
  )
  const { app, logs, base } = await topicsApp(t, ['a'], { broker })
  const first = await app.sse.publish('a', '<p>1</p>')
  await app.sse.publish('a', '<p>2</p>')

  const during = await connect(`${base}/events`, { 'last-event-id': first })
  await during.ended
  t.same(during.events, [], 'no reset, no id: the browser keeps its Last-Event-ID')
  t.match(during.raw, /^event: retry\nretry: \d+\n\n$/, 'only a retry hint')
  t.ok(logs.some((l) => l.level === 40 && /could not replay/.test(l.msg)))
  t.equal(app.sse.stats().connections, 0)

  down = false
  const after = await connect(`${base}/events`, { 'last-event-id': first })
  await after.waitFor(1)
  t.same(
    after.events.map((e) => e.data),
    ['<p>2</p>'],
    'the same id resumes once the broker answers'
  )
  after.close()
  t.same(errorsIn(logs), [])
})

test('live events that race a slow replay are neither lost nor repeated', async (t) => {
  const hold = deferred()
  const { broker } = wrapped(async (inner, topics, lastId) => {
    const result = await inner.replay(topics, lastId)
    await hold.promise // live events arrive meanwhile
    return result
  })
  const { app, base } = await topicsApp(t, ['a'], { broker })
  const first = await app.sse.publish('a', '<p>1</p>')
  await app.sse.publish('a', '<p>2</p>')
  const client = await connect(`${base}/events`, { 'last-event-id': first })
  await until(() => app.sse.stats().topics.a === 1)
  await app.sse.publish('a', '<p>3</p>')
  hold.resolve()
  await app.sse.publish('a', '<p>end</p>')
  await client.waitFor(3)
  await until(() => client.events.some((e) => e.data === '<p>end</p>'))
  t.same(
    client.events.map((e) => e.data),
    ['<p>2</p>', '<p>3</p>', '<p>end</p>']
  )
  client.close()
})

test('a client that leaves during a slow replay is cleaned up, and the late replay writes nothing', async (t) => {
  const hold = deferred()
  const wrap = wrapped(async (inner, topics, lastId) => {
    await hold.promise
    return inner.replay(topics, lastId)
  })
  const { app, logs, base } = await topicsApp(t, ['a'], { broker: wrap.broker })
  const first = await app.sse.publish('a', '<p>1</p>')
  const client = await connect(`${base}/events`, { 'last-event-id': first })
  await until(() => app.sse.stats().connections === 1)
  client.close()
  await until(() => app.sse.stats().connections === 0)
  t.same({ ...app.sse.stats().topics }, {}, 'no topic keeps the closed stream')
  hold.resolve()
  await until(() => wrap.answered() === 1, 5000, 'the replay to be answered')
  t.same({ ...app.sse.stats().topics }, {})
  t.same(errorsIn(logs), [])
})

test('a gap reported during a replay wins: the stream gets one reset with the head, then live events', async (t) => {
  const hold = deferred()
  const wrap = wrapped(async (inner, topics, lastId) => {
    await hold.promise
    return inner.replay(topics, lastId)
  })
  const { app } = await makeApp({ broker: wrap.broker })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['a'] })
  })
  app.get('/plain', (_req, reply) => {
    reply.sse()
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const first = await app.sse.publish('a', '<p>1</p>')
  const second = await app.sse.publish('a', '<p>2</p>')
  const resuming = await connect(`${base}/events`, { 'last-event-id': first })
  const live = await connect(`${base}/events`)
  const idle = await connect(`${base}/plain`)
  await until(() => app.sse.stats().topics.a === 2)
  wrap.gap()(second)
  hold.resolve()
  await until(() => wrap.answered() === 1)
  await app.sse.publish('a', '<p>3</p>')
  await resuming.waitFor(2)
  await live.waitFor(2)
  for (const client of [resuming, live]) {
    t.same(
      client.events.map((e) => [e.event, e.id, e.data]),
      [
        ['reset', second, ''],
        [undefined, client.events[1]?.id, '<p>3</p>']
      ]
    )
  }
  t.equal(idle.events.length, 0, 'a stream without topics is not reset')
  for (const client of [resuming, live, idle]) client.close()
})

for (const early of [false, true]) {
  const what = early
    ? 'a replay taken before they arrived: the stream ends after it with a hint, and the client resumes the rest'
    : 'a replay that covers them: the stream goes live'
  test(`live events past maxBufferedBytes during a slow replay are let go, never the client; ${what}`, async (t) => {
    const hold = deferred()
    const { broker } = wrapped(async (inner, topics, lastId) => {
      // `early`: the replay is read at once and answered late, like a Redis replay bounded
      // at its reader's position; otherwise it is read when it is answered.
      const read = early ? await inner.replay(topics, lastId) : null
      await hold.promise
      return read ?? inner.replay(topics, lastId)
    })
    const { app, base } = await topicsApp(t, ['a'], { broker, maxBufferedBytes: 16 * 1024, replay: 1000 })
    const first = await app.sse.publish('a', '<p>0</p>')
    const client = await connect(`${base}/events`, { 'last-event-id': first })
    await until(() => app.sse.stats().topics.a === 1)
    const chunk = 'x'.repeat(1024)
    const expected = Array.from({ length: 20 }, (_, i) => `<p>${i + 1}${chunk}</p>`)
    // 20 KB while the replay is held: more than maxBufferedBytes.
    for (const html of expected) await app.sse.publish('a', html)
    t.equal(app.sse.stats().connections, 1, 'the client is still connected')
    hold.resolve()
    if (early) {
      await client.ended
      t.same(client.events, [], 'the replay had nothing; the stream ended')
      t.match(client.raw, /retry: \d+\n\n$/, 'with a retry hint')
      const again = await connect(`${base}/events`, { 'last-event-id': first })
      await again.waitFor(20)
      t.same(
        again.events.map((e) => e.data),
        expected,
        'the resume brings every event that was let go'
      )
      again.close()
    } else {
      const end = await app.sse.publish('a', '<p>end</p>')
      await until(() => client.events.at(-1)?.id === end, 3000, 'the marker')
      t.same(
        client.events.map((e) => e.data),
        [...expected, '<p>end</p>'],
        'every event once, in order, on the same stream'
      )
      client.close()
    }
    t.equal(app.sse.stats().dropped, 0, 'nobody was dropped')
  })
}

test('a resume from an id the broker has not delivered yet: what it delivers up to that id is not sent again', async (t) => {
  // Like the Redis broker when its reader lags: publish answers at once, delivery comes
  // later, and a replay stops at what was delivered (an id past that resumes with nothing).
  const inner = memoryBroker()
  const queued: BrokerEvent[] = []
  await inner.listen((event) => {
    queued.push(event)
  })
  let deliver: BrokerListener | undefined
  let delivered = ''
  let answered = 0
  const flush = () => {
    for (const event of queued.splice(0)) {
      delivered = event.id
      deliver?.(event)
    }
  }
  const broker: Broker = {
    publish: (topic, body) => inner.publish(topic, body),
    replay: async (topics, lastId) => {
      const ahead = delivered === '' || compareIds(lastId, delivered) > 0
      const result: BrokerReplay = ahead ? { found: true, events: [] } : await inner.replay(topics, lastId)
      answered++
      return result.found
        ? { found: true, events: result.events.filter((e) => compareIds(e.id, delivered) <= 0) }
        : result
    },
    lastId: () => inner.lastId(),
    listen: async (listener) => {
      deliver = listener
    },
    unlisten: async () => {
      deliver = undefined
    },
    close: () => inner.close()
  }
  const { app, base } = await topicsApp(t, ['a'], { broker })
  await app.sse.publish('a', '<p>1</p>')
  flush()
  const ids = []
  for (let i = 2; i <= 5; i++) ids.push(await app.sse.publish('a', `<p>${i}</p>`))
  // The client saw 1 to 5 elsewhere (another instance, or the page's render) and resumes from 5.
  const client = await connect(`${base}/events`, { 'last-event-id': ids.at(-1) as string })
  await until(() => answered === 1 && app.sse.stats().topics.a === 1, 3000, 'the resume to go live')
  flush() // 2 to 5 reach the hub now, after the stream went live
  const next = await app.sse.publish('a', '<p>6</p>')
  flush()
  await client.waitFor(1)
  t.same(
    client.events.map((e) => [e.id, e.data]),
    [[next, '<p>6</p>']],
    'only the event after its id: none of 2 to 5 again'
  )
  client.close()
})

test('a broker with no id for an empty log (head null): one reset with an empty id, then live events', async (t) => {
  const { broker } = wrapped(async () => ({ found: false, head: null }))
  const { app, base } = await topicsApp(t, ['a'], { broker })
  const client = await connect(`${base}/events`, { 'last-event-id': '1-1' })
  await until(() => app.sse.stats().topics.a === 1 && client.events.length === 1, 3000, 'the reset')
  const live = await app.sse.publish('a', '<p>live</p>')
  await client.waitFor(2)
  t.same(
    client.events.map((e) => [e.event, e.id, e.data]),
    [
      ['reset', '', ''],
      [undefined, live, '<p>live</p>']
    ]
  )
  client.close()
})

test('resume_overflow after a replay of 16 KB or more: the replay, then the hint, then a normal end; the next connection resumes exactly', async (t) => {
  const hold = deferred()
  const { broker } = wrapped(async (inner, topics, lastId) => {
    // Read at once, answered late: live events pile up meanwhile.
    const read = await inner.replay(topics, lastId)
    await hold.promise
    return read
  })
  const { app, base } = await topicsApp(t, ['a'], { broker, maxBufferedBytes: 16 * 1024, replay: 1000 })
  const chunk = 'x'.repeat(1024)
  const first = await app.sse.publish('a', '<p>first</p>')
  const replayed = Array.from({ length: 40 }, (_, i) => `<p>r${i}${chunk}</p>`)
  for (const html of replayed) await app.sse.publish('a', html)
  const client = await connect(`${base}/events`, { 'last-event-id': first })
  let reset = false
  client.res.socket.on('error', () => {
    reset = true
  })
  await until(() => app.sse.stats().topics.a === 1)
  const live = Array.from({ length: 20 }, (_, i) => `<p>l${i}${chunk}</p>`)
  for (const html of live) await app.sse.publish('a', html)
  hold.resolve()
  await client.ended
  t.notOk(reset, 'the connection was not reset')
  t.same(
    client.events.map((e) => e.data),
    replayed,
    'the whole replay (40 KB) arrived'
  )
  t.match(client.raw, /\n\nevent: retry\nretry: \d+\n\n$/, 'then the hint, last')
  const again = await connect(`${base}/events`, { 'last-event-id': client.events.at(-1)?.id ?? '' })
  const marker = await app.sse.publish('a', '<p>end</p>')
  await until(() => again.events.at(-1)?.id === marker, 5000, 'the marker')
  t.same(
    again.events.map((e) => e.data),
    [...live, '<p>end</p>'],
    'the next connection resumes exactly: every live event once, in order'
  )
  t.equal(app.sse.stats().dropped, 0, 'nobody was dropped')
  again.close()
})
