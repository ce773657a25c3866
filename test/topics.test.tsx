import { test } from 'tap'
import type { SseSink } from '../lib/index.js'
import { errorsIn, makeApp, topicsApp } from './helpers/app.js'
import { connect, listen, until } from './helpers/sse.js'

function Note({ text }: { text: string }) {
  return (
    <li class="note">
      <span safe>{text}</span>
    </li>
  )
}

test('publish renders once and sends the same bytes to every subscriber of the topic, and only them', async (t) => {
  const { app, logs } = await makeApp()
  app.get('/events/:topic', (req, reply) => {
    reply.sse({ topics: [(req.params as { topic: string }).topic] })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const a1 = await connect(`${base}/events/news`)
  const a2 = await connect(`${base}/events/news`)
  const b = await connect(`${base}/events/other`)
  await until(() => app.sse.stats().connections === 3)
  t.same(app.sse.stats().topics, { news: 2, other: 1 })

  let renders = 0
  function Counted() {
    renders++
    return <Note text="<script>alert(1)</script>" />
  }
  const id1 = await app.sse.publish('news', <Counted />, 'note')
  const id2 = await app.sse.publish('other', <Note text="for b" />)
  t.equal(renders, 1, 'rendered once for two subscribers')
  t.match(id1, /^\d+-\d+$/)

  // A final marker on news: anything of other's sent to news subscribers would come before it.
  const end = await app.sse.publish('news', '<p>end</p>')
  await a1.waitFor(2)
  await a2.waitFor(2)
  await b.waitFor(1)
  t.equal(a1.events[0]?.data, String(<Note text="<script>alert(1)</script>" />))
  t.match(a1.events[0]?.data, /&lt;script>/, 'user text stays escaped')
  t.equal(a1.events[0]?.event, 'note')
  t.equal(a1.events[0]?.id, id1)
  t.equal(a1.raw, a2.raw, 'identical bytes to both subscribers')
  t.same(
    b.events.map((e) => [e.id, e.data]),
    [[id2, String(<Note text="for b" />)]]
  )
  t.same(
    a1.events.map((e) => e.id),
    [id1, end],
    'news subscribers do not get other'
  )
  t.same(app.sse.stats(), { connections: 3, topics: { news: 2, other: 1 }, published: 3, dropped: 0, refused: 0 })

  a1.close()
  a2.close()
  await until(() => app.sse.stats().connections === 1)
  t.same(app.sse.stats().topics, { other: 1 }, 'a topic with no subscribers disappears')
  t.same(errorsIn(logs), [])
})

test('ids increase across topics; async components are awaited before publishing', async (t) => {
  const { app } = await makeApp()
  async function Later({ n }: { n: number }) {
    await new Promise((r) => setTimeout(r, 1))
    return <b>{n}</b>
  }
  const ids = [
    await app.sse.publish('x', <Later n={1} />),
    await app.sse.publish('y', 'two'),
    await app.sse.publish('x', 'three')
  ]
  const ns = ids.map((id) => Number(id.split('-')[1]))
  t.same(ns, [1, 2, 3])
  t.equal(new Set(ids.map((id) => id.split('-')[0])).size, 1, 'one sequence')
  await app.close()
})

test('subscribe() and unsubscribe() change topics of an open stream; a source with topics keeps the stream open', async (t) => {
  const { app } = await makeApp()
  let sink!: SseSink
  app.get('/events', (_req, reply) => {
    sink = reply.sse(['<p>from the source</p>'], { topics: ['a'] })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.waitFor(1)
  sink.subscribe('b')
  sink.subscribe('b')
  t.same(app.sse.stats().topics, { a: 1, b: 1 })
  await app.sse.publish('b', '<p>b1</p>')
  sink.unsubscribe('a')
  sink.unsubscribe('nope')
  await app.sse.publish('a', '<p>a-not-seen</p>')
  await app.sse.publish('b', '<p>b2</p>')
  await client.waitFor(3)
  t.same(
    client.events.map((e) => e.data),
    ['<p>from the source</p>', '<p>b1</p>', '<p>b2</p>']
  )
  t.same(app.sse.stats().topics, { b: 1 })
  t.throws(() => sink.subscribe(''), { code: 'FST_ERR_HTML_SSE_TOPIC_INVALID' })
  sink.close()
  sink.subscribe('c')
  t.same(app.sse.stats().topics, {}, 'a closed sink subscribes to nothing')
})

test('publish refuses bad input with coded errors and never corrupts a stream', async (t) => {
  const { app, base } = await topicsApp(t, ['t'])
  const client = await connect(`${base}/events`)
  await until(() => app.sse.stats().connections === 1)
  await t.rejects(app.sse.publish('', 'x'), { code: 'FST_ERR_HTML_SSE_TOPIC_INVALID' })
  await t.rejects(app.sse.publish(7 as unknown as string, 'x'), { code: 'FST_ERR_HTML_SSE_TOPIC_INVALID' })
  // No UTF-8 form: Redis would store U+FFFD and deliver it to the subscribers of '\uFFFD'.
  for (const lone of ['\uD800', 'a\uDC00', '\uDBFFb']) {
    await t.rejects(app.sse.publish(lone, 'x'), { code: 'FST_ERR_HTML_SSE_TOPIC_INVALID' }, 'a lone surrogate')
  }
  await t.rejects(app.sse.publish('t', 'x', 'a\nb'), { code: 'FST_ERR_HTML_SSE_EVENT_NEWLINE' })
  await t.rejects(app.sse.publish('t', 'x', 'e', { id: '5' } as never), { code: 'FST_ERR_HTML_SSE_PUBLISH_ID' })
  await t.rejects(app.sse.publish('t', 'x', 'e', { retry: -5 }), { code: 'FST_ERR_HTML_SSE_RETRY_INVALID' })
  await t.rejects(app.sse.publish('t', { no: 'html' } as never), { code: 'FST_ERR_HTML_SSE_HTML_INVALID' })
  await app.sse.publish('t', '<p>ok</p>', 'e', { retry: 100 })
  await client.waitFor(1)
  t.same(
    client.events.map((e) => [e.event, e.data]),
    [['e', '<p>ok</p>']]
  )
  t.match(client.raw, /retry: 100\n/)
  t.equal(app.sse.stats().published, 1)
})
