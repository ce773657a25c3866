import { EventSource } from 'eventsource'
import { test } from 'tap'
import type { SseSink } from '../lib/index.js'
import { errorsIn, makeApp, topicsApp } from './helpers/app.js'
import { answerOf, connect, listen, until } from './helpers/sse.js'

test('maxConnections: past it 503 with a randomised Retry-After, the connection closed, no source, a closed sink', async (t) => {
  const { app, logs } = await makeApp({ maxConnections: 2 })
  let started = 0
  const refusedSinks: SseSink[] = []
  app.get('/events', (_req, reply) => {
    const sink = reply.sse(async function* (s) {
      started++
      yield '<p>hello</p>'
      await new Promise((resolve) => s.signal.addEventListener('abort', resolve))
    })
    if (sink.signal.aborted) refusedSinks.push(sink)
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const a = await connect(`${base}/events`)
  const b = await connect(`${base}/events`)
  await a.waitFor(1)
  await b.waitFor(1)
  const retryAfter = new Set<string>()
  for (let i = 0; i < 30; i++) {
    const answer = await answerOf(`${base}/events`)
    t.equal(answer.status, 503)
    t.equal(answer.headers.connection, 'close')
    const seconds = Number(answer.headers['retry-after'])
    t.ok(
      Number.isInteger(seconds) && seconds >= 2 && seconds <= 10,
      `Retry-After ${seconds} is whole seconds in [2, 10]`
    )
    retryAfter.add(String(seconds))
    await answer.socketClosed
  }
  t.ok(retryAfter.size > 1, 'Retry-After varies between refusals')
  t.equal(started, 2, 'refused streams start no source')
  t.equal(refusedSinks.length, 30)
  t.equal(await refusedSinks[0]?.send('<p>x</p>'), false, 'a refused sink does not send')
  t.same(app.sse.stats().refused, 30)
  t.same(app.sse.stats().connections, 2)
  a.close()
  await until(() => app.sse.stats().connections === 1)
  const c = await connect(`${base}/events`)
  await c.waitFor(1)
  t.equal(c.res.statusCode, 200, 'a place freed is taken again')
  b.close()
  c.close()
  t.same(errorsIn(logs), [])
})

test('maxConnectionsPerClient with clientKey: past it 429, other clients unaffected', async (t) => {
  const { app } = await makeApp({
    maxConnectionsPerClient: 2,
    clientKey: (request) => String(request.headers['x-user'])
  })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['t'] })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const ann = [
    await connect(`${base}/events`, { 'x-user': 'ann' }),
    await connect(`${base}/events`, { 'x-user': 'ann' })
  ]
  const third = await answerOf(`${base}/events`, { headers: { 'x-user': 'ann' } })
  t.equal(third.status, 429)
  t.ok(Number(third.headers['retry-after']) >= 2)
  await third.socketClosed
  const bob = await connect(`${base}/events`, { 'x-user': 'bob' })
  t.equal(bob.res.statusCode, 200)
  t.equal(app.sse.stats().refused, 1)
  ann[0]?.close()
  await until(() => app.sse.stats().connections === 2)
  const again = await connect(`${base}/events`, { 'x-user': 'ann' })
  t.equal(again.res.statusCode, 200, 'a closed stream frees its place')
  for (const client of [...ann, bob, again]) client.close()
})

test('a refused SSE client gets a stream that only says when to come back, so every client retries in place', async (t) => {
  const { app, logs } = await makeApp({ maxConnections: 1 })
  let started = 0
  app.get('/events', (_req, reply) => {
    reply.sse(
      async function* (s) {
        started++
        await new Promise((resolve) => s.signal.addEventListener('abort', resolve))
      },
      { topics: ['feed'] }
    )
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const holder = await connect(`${base}/events`)
  await until(() => app.sse.stats().connections === 1)
  const hints = new Set<number>()
  for (let i = 0; i < 20; i++) {
    const refused = await answerOf(`${base}/events`, { headers: { accept: 'text/event-stream' } })
    t.equal(refused.status, 200, 'an event stream every client reads')
    t.match(refused.headers['content-type'], /^text\/event-stream/)
    t.equal(refused.headers.connection, 'close', 'no idle keep-alive socket is left')
    const match = /^event: retry\nretry: (\d+)\n\n$/.exec(refused.body)
    t.ok(match, `only a retry hint: ${JSON.stringify(refused.body)}`)
    const ms = Number(match?.[1])
    t.ok(ms >= 1000 && ms <= 5000, `the hint ${ms} is in [1000, 5000]`)
    hints.add(ms)
    await refused.socketClosed
  }
  t.ok(hints.size > 10, 'the hints are spread')
  t.equal(started, 1, 'a refused stream starts no source')
  t.equal(app.sse.stats().refused, 20, 'refusals are counted')

  // A hand-written EventSource refused at its first connect comes back by itself once a place frees.
  const first = await app.sse.publish('feed', '<p>before</p>')
  const received: string[] = []
  const source = new EventSource(`${base}/events?lastEventId=${encodeURIComponent(first)}`)
  t.teardown(() => source.close())
  source.addEventListener('message', (event) => received.push(event.data))
  await until(() => app.sse.stats().refused === 21, 10_000, 'the EventSource to be refused')
  await app.sse.publish('feed', '<p>while refused</p>')
  holder.close()
  await until(() => received.length === 1, 15_000, 'the refused EventSource to resume')
  await app.sse.publish('feed', '<p>live</p>')
  await until(() => received.length === 2, 5000, 'the live event')
  t.same(received, ['<p>while refused</p>', '<p>live</p>'], 'it resumed from its id: nothing missed, nothing twice')
  t.same(errorsIn(logs), [])
})

test('maxLifetimeMs: the stream ends after a retry hint and its EventSource resumes with no gap and no duplicate', async (t) => {
  const { app } = await makeApp({ maxLifetimeMs: 250 })
  let opened = 0
  app.get('/events', (_req, reply) => {
    opened++
    reply.sse({ topics: ['feed'] })
  })
  app.get('/forever', (_req, reply) => {
    reply.sse({ topics: ['feed'], maxLifetimeMs: 0 })
  })
  let lateOpened = 0
  app.get('/late', (_req, reply) => {
    lateOpened++
    // Topics added after the stream opened count too.
    reply.sse().subscribe('feed')
  })
  app.get('/own', (_req, reply) => {
    // No topics: its own source cannot resume, so its lifetime does not end it.
    reply.sse(async function* (s) {
      yield '<p>own</p>'
      await new Promise((resolve) => s.signal.addEventListener('abort', resolve))
    })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const forever = await connect(`${base}/forever`)
  const own = await connect(`${base}/own`)
  let ownEnded = false
  void own.ended.then(() => {
    ownEnded = true
  })
  const late = new EventSource(`${base}/late`)
  t.teardown(() => late.close())
  const received: string[] = []
  const source = new EventSource(`${base}/events`)
  t.teardown(() => source.close())
  source.addEventListener('message', (event) => received.push(event.data))
  await until(() => app.sse.stats().topics.feed === 3)
  const total = 2000
  let sent = 0
  // Publish until both streams have been renewed at least three times, then a final marker.
  while ((opened < 4 || lateOpened < 4) && sent < total) {
    await app.sse.publish('feed', `<p>${sent++}</p>`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  await app.sse.publish('feed', '<p>end</p>')
  await until(() => received.at(-1) === '<p>end</p>', 20_000, 'the final marker')
  t.ok(opened >= 2, `the stream was renewed (${opened} connections)`)
  t.same(
    received,
    [...Array.from({ length: sent }, (_, i) => `<p>${i}</p>`), '<p>end</p>'],
    'every event once, in order'
  )
  t.equal(forever.events.length, sent + 1, 'a stream with maxLifetimeMs: 0 stays open')
  t.notOk(forever.raw.includes('retry:'), 'and gets no hint')
  t.ok(lateOpened >= 4, `a stream that subscribed after opening was renewed too (${lateOpened} connections)`)
  t.notOk(ownEnded, 'a stream without topics outlived three lifetimes')
  t.notOk(own.raw.includes('retry:'), 'and got no hint')
  forever.close()
  own.close()
})

test('drainMs: app.close() sends each stream a retry hint drawn from [0, drainMs], spread over the window', async (t) => {
  const drainMs = 2000
  const { app, logs } = await makeApp({ drainMs })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['t'] })
  })
  const base = await listen(app)
  const clients = await Promise.all(Array.from({ length: 40 }, () => connect(`${base}/events`)))
  await until(() => app.sse.stats().connections === 40)
  await app.close()
  const hints: number[] = []
  for (const client of clients) {
    await client.ended
    const match = /^event: retry\nretry: (\d+)\n\n$/.exec(client.raw)
    t.ok(match, 'a retry hint, then the end')
    hints.push(Number(match?.[1]))
  }
  t.ok(
    hints.every((h) => h >= 0 && h <= drainMs),
    'every hint is within the window'
  )
  t.ok(Math.min(...hints) < drainMs / 4, `some reconnect early (${Math.min(...hints)})`)
  t.ok(Math.max(...hints) > (drainMs * 3) / 4, `some reconnect late (${Math.max(...hints)})`)
  t.ok(new Set(hints).size > 20, 'the hints differ')
  t.same(errorsIn(logs), [])
})

test('writeTimeoutMs: a client that accepts no bytes is dropped though under maxBufferedBytes; a reader gets everything', async (t) => {
  const { app, logs, base } = await topicsApp(t, ['big'], { writeTimeoutMs: 200, maxBufferedBytes: 256 * 1024 * 1024 })
  const stalled = await connect(`${base}/events`)
  stalled.res.pause()
  stalled.res.socket.pause()
  const reader = await connect(`${base}/events`)
  await until(() => app.sse.stats().topics.big === 2)
  const n = 400
  const chunk = 'z'.repeat(16 * 1024)
  for (let i = 0; i < n; i++) await app.sse.publish('big', `<p>${i}</p>${chunk}`)
  await until(() => app.sse.stats().dropped === 1, 20_000, 'the stalled stream to be dropped')
  await reader.waitFor(n, 20_000)
  t.equal(reader.events.length, n)
  t.equal(app.sse.stats().connections, 1)
  t.ok(logs.some((l) => /writeTimeoutMs/.test(l.msg)))
  reader.close()
  stalled.close()
})

test('the production options are checked at registration and per stream', async (t) => {
  for (const [name, value] of [
    ['maxConnections', 0],
    ['maxConnections', -1],
    ['maxConnectionsPerClient', 1.5],
    ['maxLifetimeMs', -1],
    ['drainMs', 'soon'],
    ['writeTimeoutMs', Number.NaN],
    ['clientKey', 'ip']
  ] as const) {
    await t.rejects(
      makeApp({ [name]: value } as never),
      { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' },
      `${name}: ${String(value)}`
    )
  }
  const { app } = await makeApp({ maxConnections: Number.POSITIVE_INFINITY })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['t'], maxLifetimeMs: -5 })
  })
  const response = await app.inject('/events')
  t.equal(response.statusCode, 500)
  t.equal(response.json().code, 'FST_ERR_HTML_SSE_OPTION_INVALID')
  await app.close()
})
