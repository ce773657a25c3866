/**
 * Nothing lost on one instance: events larger than `maxBufferedBytes` reach a
 * client that keeps reading, while one that stopped is dropped; a page resumes
 * from the id it was rendered at; the header wins over the query parameter.
 * (A 999-event resume: test/broker-memory.test.ts; bursts larger than the cap:
 * test/slow-client.test.ts.)
 */
import { test } from 'tap'
import type { SseSink } from '../lib/index.js'
import { makeApp, topicsApp } from './helpers/app.js'
import { connect, listen, until } from './helpers/sse.js'

test('an event larger than maxBufferedBytes reaches a reading client; a client that stopped reading is dropped', async (t) => {
  const { app, base } = await topicsApp(t, ['huge'], { maxBufferedBytes: 1024 * 1024 })
  const reader = await connect(`${base}/events`)
  const stopped = await connect(`${base}/events`)
  stopped.res.pause()
  stopped.res.socket.pause()
  await until(() => app.sse.stats().topics.huge === 2)
  const huge = `<pre>${'h'.repeat(2 * 1024 * 1024)}</pre>`
  // Enough to fill the kernel's socket buffers behind the client that stopped reading.
  for (let i = 0; i < 8; i++) await app.sse.publish('huge', huge)
  await app.sse.publish('huge', '<p>after</p>')
  await reader.waitFor(9, 20_000)
  t.ok(reader.events.slice(0, 8).every((e) => e.data.length === huge.length))
  t.equal(reader.events[8]?.data, '<p>after</p>')
  await until(() => app.sse.stats().dropped === 1, 20_000, 'the stopped client to be dropped')
  t.equal(app.sse.stats().connections, 1)
  reader.close()
  stopped.close()
})

test('lastId() and the lastEventId query close the render-to-connect gap; the header wins over the query', async (t) => {
  const { app, base } = await topicsApp(t, ['notes'])
  // A page rendered before the first event: the empty log's id closes the gap too.
  const emptyAt = await app.sse.lastId()
  t.type(emptyAt, 'string', 'an empty log has an id: the position before the first event')
  const first = await app.sse.publish('notes', '<li>old</li>')
  const early = await connect(`${base}/events?lastEventId=${encodeURIComponent(String(emptyAt))}`)
  await early.waitFor(1)
  t.same(
    early.events.map((e) => [e.id, e.data]),
    [[first, '<li>old</li>']],
    'the first event, published between rendering and connecting, arrives'
  )
  early.close()
  // The page renders its state and takes lastId() with it.
  const renderedAt = await app.sse.lastId()
  t.type(renderedAt, 'string')
  // Published between rendering and connecting.
  const gapId = await app.sse.publish('notes', '<li>in the gap</li>')
  const page = await connect(`${base}/events?lastEventId=${encodeURIComponent(String(renderedAt))}`)
  await page.waitFor(1)
  t.same(
    page.events.map((e) => e.data),
    ['<li>in the gap</li>'],
    'the gap arrives, older history does not'
  )
  const later = await app.sse.publish('notes', '<li>later</li>')
  await page.waitFor(2)
  page.close()

  // A reconnect carries both: the header (newer) wins.
  const both = await connect(`${base}/events?lastEventId=${encodeURIComponent(String(renderedAt))}`, {
    'last-event-id': gapId
  })
  await app.sse.publish('notes', '<li>marker</li>')
  await both.waitFor(2)
  t.same(
    both.events.map((e) => e.id),
    [later, await app.sse.lastId()]
  )
  both.close()
})

test('the lastEventId query parameter is read from the URL, even when a querystring schema strips it', async (t) => {
  const { app } = await makeApp()
  app.get(
    '/events',
    {
      schema: { querystring: { type: 'object', properties: { tab: { type: 'string' } }, additionalProperties: false } }
    },
    (_req, reply) => {
      reply.sse({ topics: ['notes'] })
    }
  )
  const base = await listen(app)
  t.teardown(() => app.close())
  const renderedAt = await app.sse.lastId()
  const gap = await app.sse.publish('notes', '<li>in the gap</li>')
  const page = await connect(`${base}/events?tab=1&lastEventId=${encodeURIComponent(String(renderedAt))}`)
  await page.waitFor(1)
  t.same(
    page.events.map((e) => [e.id, e.data]),
    [[gap, '<li>in the gap</li>']]
  )
  page.close()
})

test('an event published in the same turn as a close or an unsubscribe still reaches that stream first', async (t) => {
  const { app } = await makeApp()
  const sinks: SseSink[] = []
  app.get('/events', (_req, reply) => {
    sinks.push(reply.sse({ topics: ['t'] }))
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const closing = await connect(`${base}/events`)
  const leaving = await connect(`${base}/events`)
  const staying = await connect(`${base}/events`)
  await until(() => app.sse.stats().topics.t === 3)
  const [closingSink, leavingSink] = sinks as [SseSink, SseSink]
  await app.sse.publish('t', '<p>before close</p>')
  closingSink.close()
  await app.sse.publish('t', '<p>before unsubscribe</p>')
  leavingSink.unsubscribe('t')
  const marker = await app.sse.publish('t', '<p>marker</p>')
  await closing.ended
  await until(() => staying.events.at(-1)?.id === marker, 5000, 'the marker')
  await leavingSink.send('<p>own marker</p>')
  await until(() => leaving.events.at(-1)?.data === '<p>own marker</p>', 5000, 'the own marker')
  t.same(
    closing.events.map((e) => e.data),
    ['<p>before close</p>'],
    'the closed stream got what was published before its close'
  )
  t.same(
    leaving.events.map((e) => e.data),
    ['<p>before close</p>', '<p>before unsubscribe</p>', '<p>own marker</p>'],
    'the stream that left the topic got what was published before it left, and nothing after'
  )
  leaving.close()
  staying.close()
})
