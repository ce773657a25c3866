import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import type { SseSink } from '../lib/index.js'
import { errorsIn, makeApp, topicsApp } from './helpers/app.js'
import { connect, listen, until } from './helpers/sse.js'

test('a client that stops reading is shed past maxBufferedBytes; the others get every event', async (t) => {
  const { app, logs } = await makeApp({ maxBufferedBytes: 256 * 1024 })
  let slowSink!: SseSink
  let sourceReturned = false
  app.get('/fast', (_req, reply) => {
    reply.sse({ topics: ['feed'] })
  })
  app.get('/slow', (_req, reply) => {
    slowSink = reply.sse(
      (async function* () {
        try {
          yield '<p>hello</p>'
          await sleep(60_000, undefined, { signal: slowSink.signal })
        } finally {
          sourceReturned = true
        }
      })(),
      { topics: ['feed'] }
    )
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const fast = await connect(`${base}/fast`)
  const slow = await connect(`${base}/slow`)
  await slow.waitFor(1)
  slow.res.pause()
  await until(() => app.sse.stats().topics.feed === 2)

  const count = 10_000
  const row = `<tr><td>${'r'.repeat(1000)}</td></tr>`
  for (let i = 0; i < count; i++) await app.sse.publish('feed', row)
  await fast.waitFor(count, 20_000)
  t.equal(fast.events.length, count, 'the reading client got every event')
  t.same(
    fast.events.slice(0, 3).map((e) => Number(e.id?.split('-')[1])),
    [1, 2, 3]
  )
  // Its unsent bytes passed maxBufferedBytes: it is shed, whether before or just after the last publish.
  await until(() => slowSink.signal.aborted, 5000, 'the slow stream to be shed')
  await until(() => sourceReturned, 2000, 'its source to return')
  t.equal(app.sse.stats().dropped, 1)
  t.equal(app.sse.stats().connections, 1)
  slow.res.resume()
  await slow.ended
  t.ok(slow.events.length < count, `the slow client's connection was cut (it read ${slow.events.length})`)
  t.same(errorsIn(logs), [], 'shedding a slow client is not an error')
  t.ok(
    logs.some((l) => l.level === 30 && /maxBufferedBytes/.test(l.msg)),
    'it is logged at info'
  )
})

for (const maxBufferedBytes of [undefined, 64 * 1024]) {
  test(`a burst of awaited publishes never sheds a client that keeps reading (maxBufferedBytes: ${maxBufferedBytes ?? 'default'}, smaller than the burst)`, async (t) => {
    const { app, base } = await topicsApp(t, ['burst'], maxBufferedBytes === undefined ? {} : { maxBufferedBytes })
    const clients = await Promise.all([1, 2, 3].map(() => connect(`${base}/events`)))
    await until(() => app.sse.stats().topics.burst === 3)
    const count = 20_000
    const html = `<div class="row">\n  <span>${'x'.repeat(260)}</span>\n</div>`
    for (let i = 0; i < count; i++) await app.sse.publish('burst', html)
    for (const client of clients) await client.waitFor(count, 30_000)
    t.equal(app.sse.stats().dropped, 0)
    t.ok(
      clients.every((c) => c.events.length === count && c.events.every((e) => e.data === html)),
      'all clients got every event intact'
    )
  })
}

test('a client that keeps reading slowly is never shed: progress is judged in bytes the socket accepts', async (t) => {
  const MB = 1024 * 1024
  /** An event of `bytes` bytes of HTML, on lines of 1 KB. */
  const html = (bytes: number, mark: string) => `<p>${mark}</p>\n${`${'x'.repeat(1023)}\n`.repeat(bytes / 1024)}`

  // Three cases at once, each on an app of its own, so the test lasts as long as the slowest.
  const oneLargeEvent = async () => {
    const { app, base } = await topicsApp(t, ['big'])
    const reader = await connect(`${base}/events`, {}, { bytesPerSecond: 2 * MB })
    const stopped = await connect(`${base}/events`)
    stopped.res.pause()
    stopped.res.socket.pause()
    await until(() => app.sse.stats().topics.big === 2)
    await app.sse.publish('big', html(8 * MB, 'one'))
    await app.sse.publish('big', html(8 * MB, 'two'))
    await until(() => app.sse.stats().dropped === 1, 20_000, 'the client that reads nothing to be dropped')
    await reader.waitFor(2, 60_000)
    t.ok(
      reader.events[0]?.data === html(8 * MB, 'one') && reader.events[1]?.data === html(8 * MB, 'two'),
      'two 8 MB events reach a client reading 2 MB/s, whole and in order'
    )
    t.equal(app.sse.stats().dropped, 1, 'only the client that read nothing was dropped')
    reader.close()
    stopped.close()
  }

  const largeReplay = async () => {
    const { app, base } = await topicsApp(t, ['log'])
    const first = await app.sse.publish('log', '<p>before</p>')
    const row = html(8 * 1024, 'row')
    for (let i = 0; i < 999; i++) await app.sse.publish('log', row)
    const marker = await app.sse.publish('log', '<p>end</p>')
    const reader = await connect(`${base}/events`, { 'last-event-id': first }, { bytesPerSecond: 2 * MB })
    await reader.waitFor(1000, 60_000)
    t.equal(reader.events.length, 1000, 'a replay of 1,000 events, 8 MB, reaches a client reading 2 MB/s')
    t.equal(reader.events.at(-1)?.id, marker, 'in order, to the last')
    t.equal(app.sse.stats().dropped, 0)
    reader.close()
  }

  const writeTimeout = async () => {
    const { app, base } = await topicsApp(t, ['big'], { writeTimeoutMs: 2000 })
    const reader = await connect(`${base}/events`, {}, { bytesPerSecond: 1 * MB })
    await until(() => app.sse.stats().topics.big === 1)
    await app.sse.publish('big', html(16 * MB, 'huge'))
    const marker = await app.sse.publish('big', '<p>end</p>')
    await reader.waitFor(2, 90_000)
    t.equal(reader.events[0]?.data.length, html(16 * MB, 'huge').length, 'a 16 MB event reaches a 1 MB/s reader')
    t.equal(reader.events[1]?.id, marker, 'and what follows it')
    t.equal(app.sse.stats().dropped, 0, 'writeTimeoutMs: 2000 sees the bytes move')
    reader.close()
  }

  await Promise.all([oneLargeEvent(), largeReplay(), writeTimeout()])
})
