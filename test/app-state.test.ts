/**
 * App state on the memory broker: presence, revocation, expiry and keyed
 * events, with two apps sharing one broker as two instances would.
 */
import { type Test, test } from 'tap'
import { type Broker, CONTROL_TOPIC, memoryBroker } from '../lib/index.js'
import { errorsIn, makeApp } from './helpers/app.js'
import { connect, listen, until } from './helpers/sse.js'

/** An app whose `/events?member=…&topic=…` opens a stream of that member on that topic. */
async function stateApp(t: Test, broker: Broker) {
  const { app, logs } = await makeApp({ broker })
  app.get<{ Querystring: { member?: string; topic?: string; expiresAt?: string } }>('/events', (req, reply) => {
    const { member, topic = 'room', expiresAt } = req.query
    reply.sse({
      topics: [topic],
      member,
      expiresAt: expiresAt === undefined ? undefined : Number(expiresAt)
    })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  return { app, logs, base }
}

test('presence adds up every instance sharing the broker and follows opens and closes', async (t) => {
  const broker = memoryBroker()
  const a = await stateApp(t, broker)
  const b = await stateApp(t, broker)
  const clients = [
    await connect(`${a.base}/events?member=ann`),
    await connect(`${a.base}/events?member=bob`),
    await connect(`${b.base}/events?member=ann`),
    await connect(`${b.base}/events`),
    await connect(`${b.base}/events?member=cid&topic=other`)
  ]
  await until(async () => (await a.app.sse.presence('room')).streams === 4, 5000, 'presence of room')
  t.same(await a.app.sse.presence('room'), { streams: 4, members: ['ann', 'bob'] }, 'from instance A')
  t.same(await b.app.sse.presence('room'), { streams: 4, members: ['ann', 'bob'] }, 'the same from instance B')
  t.same(await a.app.sse.presence('other'), { streams: 1, members: ['cid'] })
  t.same(await a.app.sse.presence('nobody'), { streams: 0, members: [] })
  clients[1]?.close()
  clients[2]?.close()
  await until(async () => (await b.app.sse.presence('room')).streams === 2, 5000, 'the closes to show')
  t.same(await b.app.sse.presence('room'), { streams: 2, members: ['ann'] })
  // An instance that closes takes its shares back.
  await b.app.close()
  t.same(await a.app.sse.presence('room'), { streams: 1, members: ['ann'] })
  t.same(await a.app.sse.presence('other'), { streams: 0, members: [] })
  for (const client of clients) client.close()
  await t.rejects(a.app.sse.presence(''), { code: 'FST_ERR_HTML_SSE_TOPIC_INVALID' })
})

test('disconnect() ends the matching streams on every instance after a revoked event; the others go on', async (t) => {
  const broker = memoryBroker()
  const a = await stateApp(t, broker)
  const b = await stateApp(t, broker)
  const annA = await connect(`${a.base}/events?member=ann`)
  const annB = await connect(`${b.base}/events?member=ann&topic=other`)
  const bob = await connect(`${b.base}/events?member=bob`)
  const roomOnly = await connect(`${a.base}/events?member=cid&topic=other`)
  await until(() => a.app.sse.stats().connections === 2 && b.app.sse.stats().connections === 2)
  await a.app.sse.disconnect({ member: 'ann' })
  await annA.ended
  await annB.ended
  for (const client of [annA, annB]) {
    t.same(
      client.events.map((e) => [e.event, e.data]),
      [['revoked', '']],
      'a revoked event that every client dispatches, then the end'
    )
  }
  await b.app.sse.disconnect({ topic: 'other' })
  await roomOnly.ended
  t.same(roomOnly.events.at(-1)?.event, 'revoked', 'disconnect by topic')
  await a.app.sse.disconnect({ member: 'cid', topic: 'room' })
  const marker = await a.app.sse.publish('room', '<p>still here</p>')
  await until(() => bob.events.at(-1)?.id === marker, 5000, 'the marker')
  t.same(
    bob.events.map((e) => e.data),
    ['<p>still here</p>'],
    'a stream that matched nothing got nothing but the marker'
  )
  t.equal(a.app.sse.stats().connections + b.app.sse.stats().connections, 1)
  for (const [filter, code] of [
    [{}, 'FST_ERR_HTML_SSE_OPTION_INVALID'],
    [{ member: '' }, 'FST_ERR_HTML_SSE_OPTION_INVALID'],
    [{ member: 42 }, 'FST_ERR_HTML_SSE_OPTION_INVALID'],
    [{ topic: '' }, 'FST_ERR_HTML_SSE_TOPIC_INVALID']
  ] as const) {
    await t.rejects(a.app.sse.disconnect(filter as never), { code }, JSON.stringify(filter))
  }
  bob.close()
  t.same(errorsIn(a.logs), [])
})

test('expiresAt: the stream gets expired at that time and nothing published later', async (t) => {
  const { app, base } = await stateApp(t, memoryBroker())
  const soon = Date.now() + 300
  const expiring = await connect(`${base}/events?expiresAt=${soon}`)
  const staying = await connect(`${base}/events`)
  await until(() => app.sse.stats().connections === 2)
  const before = await app.sse.publish('room', '<p>before</p>')
  await expiring.ended
  const after = await app.sse.publish('room', '<p>after</p>')
  await until(() => staying.events.at(-1)?.id === after, 5000, 'the later event on the other stream')
  t.same(
    expiring.events.map((e) => [e.event, e.id ?? null]),
    [
      [undefined, before],
      ['expired', null]
    ],
    'what was published before, then expired (no id: the client keeps its place), then the end'
  )
  const past = await connect(`${base}/events?expiresAt=${Date.now() - 1000}`)
  await past.ended
  t.same(
    past.events.map((e) => e.event),
    ['expired'],
    'a time already past: expired at once'
  )
  staying.close()
  for (const bad of [-1, 1.5, Number.NaN]) {
    const { app: other } = await makeApp()
    other.get('/events', (_req, reply) => {
      reply.sse({ topics: ['t'], expiresAt: bad })
    })
    const response = await other.inject('/events')
    t.equal(response.json().code, 'FST_ERR_HTML_SSE_OPTION_INVALID', `expiresAt ${bad}`)
    await other.close()
  }
  const { app: invalidDate } = await makeApp()
  invalidDate.get('/events', (_req, reply) => {
    reply.sse({ topics: ['t'], expiresAt: new Date('not a date'), member: 'x' })
  })
  invalidDate.get('/member', (_req, reply) => {
    reply.sse({ topics: ['t'], member: '' })
  })
  t.equal((await invalidDate.inject('/events')).json().code, 'FST_ERR_HTML_SSE_OPTION_INVALID', 'an invalid Date')
  t.equal((await invalidDate.inject('/member')).json().code, 'FST_ERR_HTML_SSE_OPTION_INVALID', 'an empty member')
  await invalidDate.close()
})

test('keyed events: a resume gets only the newest of each key, in its place; live clients get every one', async (t) => {
  const { app, base } = await stateApp(t, memoryBroker())
  const live = await connect(`${base}/events`)
  await until(() => app.sse.stats().connections === 1)
  const start = await app.sse.lastId()
  const expected: string[] = []
  for (let i = 1; i <= 100; i++) {
    await app.sse.publish('room', `<progress value="${i}"></progress>`, 'message', { key: 'job-1' })
    if (i % 25 === 0) await app.sse.publish('room', `<p>note ${i}</p>`)
    if (i % 50 === 0) await app.sse.publish('room', `<b>other ${i}</b>`, 'message', { key: 'job-2' })
  }
  await app.sse.publish('other', '<p>another topic, same key</p>', 'message', { key: 'job-1' })
  const end = await app.sse.publish('room', '<p>end</p>')
  expected.push('<p>note 25</p>', '<p>note 50</p>', '<p>note 75</p>', '<progress value="100"></progress>')
  expected.push('<p>note 100</p>', '<b>other 100</b>', '<p>end</p>')
  const resumed = await connect(`${base}/events`, { 'last-event-id': start ?? '' })
  await until(() => resumed.events.at(-1)?.id === end, 5000, 'the resume')
  t.same(
    resumed.events.map((e) => e.data),
    expected,
    'the newest of each key, in its place among the unkeyed events'
  )
  await until(() => live.events.at(-1)?.id === end, 5000, 'the live client')
  t.equal(live.events.length, 100 + 4 + 2 + 1, 'the live client got every one')
  await t.rejects(app.sse.publish('room', '<p>x</p>', 'message', { key: '' }), {
    code: 'FST_ERR_HTML_SSE_OPTION_INVALID'
  })
  await t.rejects(app.sse.publish('room', '<p>x</p>', 'message', { key: 7 as never }), {
    code: 'FST_ERR_HTML_SSE_OPTION_INVALID'
  })
  live.close()
  resumed.close()
})

/** The memory broker with only the methods the contract requires: no presence of its own. */
function plainBroker(inner: Broker, extra: Partial<Broker> = {}): Broker {
  return {
    publish: (topic, body, options) => inner.publish(topic, body, options),
    replay: (topics, lastId) => inner.replay(topics, lastId),
    lastId: () => inner.lastId(),
    listen: (listener, onGap) => inner.listen(listener, onGap),
    unlisten: (listener) => inner.unlisten(listener),
    close: () => inner.close(),
    ...extra
  }
}

test('a control entry that cannot be read is logged and ignored; streams go on', async (t) => {
  const broker = memoryBroker()
  const { app, logs, base } = await stateApp(t, broker)
  const ann = await connect(`${base}/events?member=ann`)
  await until(() => app.sse.stats().connections === 1)
  for (const body of ['event: control\ndata: not json\n\n', 'data: {"type":"other"}\n\n', 'event: control\n\n']) {
    await broker.publish(CONTROL_TOPIC, body)
  }
  const marker = await app.sse.publish('room', '<p>still here</p>')
  await until(() => ann.events.at(-1)?.id === marker, 5000, 'the marker')
  t.same(
    ann.events.map((e) => e.data),
    ['<p>still here</p>'],
    'nothing ended the stream'
  )
  t.equal(logs.filter((l) => /control entry could not be read/.test(l.msg)).length, 3, 'each logged')
  ann.close()
})

test('a broker that shares no presence: presence() answers for this instance; a failing share is logged and tried again', async (t) => {
  const local = await stateApp(t, plainBroker(memoryBroker()))
  const a = await connect(`${local.base}/events?member=ann`)
  const b = await connect(`${local.base}/events`)
  await until(() => local.app.sse.stats().topics.room === 2)
  t.same(await local.app.sse.presence('room'), { streams: 2, members: ['ann'] }, 'this instance only')
  t.same(await local.app.sse.presence('elsewhere'), { streams: 0, members: [] })
  a.close()
  b.close()

  const inner = memoryBroker()
  let failures = 1
  const flaky = plainBroker(inner, {
    sharePresence: (instance, shares, ttlMs) =>
      failures-- > 0
        ? Promise.reject(new Error('the backend hiccuped'))
        : (inner.sharePresence as NonNullable<Broker['sharePresence']>)(instance, shares, ttlMs),
    presence: (topic) => (inner.presence as NonNullable<Broker['presence']>)(topic)
  })
  const shared = await stateApp(t, flaky)
  const c = await connect(`${shared.base}/events?member=cid`)
  await until(() => shared.logs.some((l) => /presence could not be shared/.test(l.msg)), 5000, 'the failed share')
  // The next change shares again, with the topic that failed.
  const d = await connect(`${shared.base}/events?member=dan`)
  await until(async () => (await shared.app.sse.presence('room')).streams === 2, 5000, 'presence after the retry')
  t.same(await shared.app.sse.presence('room'), { streams: 2, members: ['cid', 'dan'] })
  c.close()
  d.close()
})

test('a transaction is checked before a transactional broker gets it', async (t) => {
  const inner = memoryBroker()
  const given: unknown[] = []
  const broker = plainBroker(inner, {
    transactional: true,
    publish: (topic, body, options) => {
      given.push(options?.transaction)
      return inner.publish(topic, body)
    },
    lastId: (options) => {
      given.push(options?.transaction)
      return inner.lastId()
    }
  })
  const { app } = await makeApp({ broker })
  t.teardown(() => app.close())
  for (const transaction of [null, {}, 42, { query: 'SELECT 1' }]) {
    await t.rejects(
      app.sse.publish('t', '<p>x</p>', 'message', { transaction: transaction as never }),
      { code: 'FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED' },
      `publish with ${JSON.stringify(transaction)}`
    )
    await t.rejects(
      app.sse.lastId({ transaction: transaction as never }),
      { code: 'FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED' },
      `lastId with ${JSON.stringify(transaction)}`
    )
  }
  t.same(given, [], 'none reached the broker')
  const client = { query: () => Promise.resolve() }
  await app.sse.publish('t', '<p>x</p>', 'message', { transaction: client, key: 'k' })
  await app.sse.lastId({ transaction: client })
  t.same(given, [client, client], 'a client is handed over as it is')
})
