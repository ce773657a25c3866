import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { sseComment, sseMessage } from '../lib/index.js'
import { errorsIn, makeApp } from './helpers/app.js'
import { connect, listen, until } from './helpers/sse.js'

function Button({ n }: { n: number }) {
  return (
    <button type="button" class="btn">
      Update #{n}
    </button>
  )
}

test('headers: event stream, no caching, no proxy buffering, hook headers kept', async (t) => {
  const { app } = await makeApp()
  app.addHook('onRequest', async (_req, reply) => {
    reply.header('x-from-hook', 'kept')
    reply.header('access-control-allow-origin', '*')
  })
  app.get('/events', (_req, reply) => {
    reply.sse(['<p>one</p>'])
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.ended
  t.equal(client.res.statusCode, 200)
  t.equal(client.res.headers['content-type'], 'text/event-stream; charset=utf-8')
  t.equal(client.res.headers['cache-control'], 'no-cache, no-transform')
  t.equal(client.res.headers['x-accel-buffering'], 'no')
  t.equal(client.res.headers['x-from-hook'], 'kept')
  t.equal(client.res.headers['access-control-allow-origin'], '*')
  t.equal(client.res.headers['content-length'], undefined)
  t.same(
    client.events.map((e) => e.data),
    ['<p>one</p>']
  )
})

test('sync and async handlers, returning nothing, stream every kind of item', async (t) => {
  const { app, logs } = await makeApp()
  async function Slow({ n }: { n: number }) {
    await sleep(1)
    return <i>slow {n}</i>
  }
  const items = () => [
    sseMessage(<Button n={1} />, 'button'),
    <Button n={2} />,
    '<p>plain\nstring</p>',
    { html: <Slow n={3} />, event: 'obj', id: 'i3', retry: 250 },
    sseMessage(<Slow n={4} />),
    Promise.resolve('<p>promised</p>'),
    sseComment('a comment frame passes through'),
    { html: 'after' }
  ]
  app.get('/sync', (_req, reply) => {
    reply.sse(items())
  })
  app.get('/async', async (_req, reply) => {
    await sleep(1)
    reply.sse(
      (async function* () {
        for (const item of items()) yield item
      })()
    )
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  for (const path of ['/sync', '/async']) {
    const client = await connect(base + path)
    await client.ended
    t.same(
      client.events.map((e) => [e.event ?? 'message', e.data, e.id]),
      [
        ['button', String(<Button n={1} />), undefined],
        ['message', String(<Button n={2} />), undefined],
        ['message', '<p>plain\nstring</p>', undefined],
        ['obj', '<i>slow 3</i>', 'i3'],
        ['message', '<i>slow 4</i>', undefined],
        ['message', '<p>promised</p>', undefined],
        ['message', 'after', undefined]
      ],
      path
    )
    t.match(client.raw, /retry: 250\n/)
    t.match(client.raw, /: a comment frame passes through\n\n/)
  }
  t.same(errorsIn(logs), [], 'nothing logged as an error')
  await until(() => app.sse.stats().connections === 0)
})

test('onResponse hooks run and the request is logged when the stream ends', async (t) => {
  const { app, logs } = await makeApp()
  const finished: number[] = []
  app.addHook('onResponse', async (_req, reply) => {
    finished.push(reply.statusCode)
  })
  app.get('/events', (_req, reply) => {
    reply.sse(['a', 'b'])
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.ended
  await until(() => finished.length === 1)
  t.same(finished, [200])
  t.ok(
    logs.some((l) => l.msg === 'request completed'),
    'the request log line is written'
  )
})

test('a client leaving is logged at info with the request id; onRequestAbort hooks run', async (t) => {
  const { app, logs } = await makeApp()
  let aborted = 0
  app.addHook('onRequestAbort', (_request, done) => {
    aborted++
    done()
  })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['x'] })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await until(() => app.sse.stats().connections === 1)
  client.close()
  await until(() => app.sse.stats().connections === 0)
  await until(() => aborted === 1, 2000, 'onRequestAbort')
  const line = logs.find((l) => l.msg === 'fastify-html-sse: the client closed the stream')
  t.equal(line?.level, 30)
  t.ok(line?.reqId, 'with the request id')
  t.same(errorsIn(logs), [])
})

test('a second reply.sse() returns the same sink; send() and comment() write frames', async (t) => {
  const { app } = await makeApp()
  app.get('/events', async (_req, reply) => {
    const sink = reply.sse()
    t.equal(reply.sse(), sink)
    t.equal(sink.lastEventId, null)
    t.equal(await sink.send(<Button n={1} />), true)
    t.equal(await sink.comment('ping'), true)
    t.equal(await sink.send(<Button n={2} />, 'button', { id: '2' }), true)
    sink.close()
    t.equal(await sink.send('late'), false, 'send after close resolves false')
    t.equal(sink.signal.aborted, true)
    await sink.closed
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.ended
  t.same(
    client.events.map((e) => [e.event, e.data, e.id]),
    [
      [undefined, String(<Button n={1} />), undefined],
      ['button', String(<Button n={2} />), '2']
    ]
  )
  t.same(client.comments, ['ping'])
})

test('retryMs sends retry: when a stream opens, as a named event without data (htmx 4 applies it too)', async (t) => {
  const { app } = await makeApp({ retryMs: 3000 })
  app.get('/events', (_req, reply) => {
    reply.sse(['x'])
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.ended
  t.ok(client.raw.startsWith('event: retry\nretry: 3000\n\n'), 'retry comes first')
  t.same(
    client.events.map((e) => e.data),
    ['x']
  )
})

test('heartbeats are comment lines between frames, only on idle streams', async (t) => {
  const { app } = await makeApp({ heartbeatMs: 20 })
  let sink!: import('../lib/index.js').SseSink
  app.get('/events', (_req, reply) => {
    sink = reply.sse()
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await until(() => client.raw.includes(':\n'), 2000, 'a heartbeat')
  await sink.send('<p>a\nb</p>')
  const before = client.comments.length
  await until(() => client.comments.length > before, 2000, 'a heartbeat after a frame')
  await sink.send('<p>c</p>')
  sink.close()
  await client.ended
  t.ok(client.comments.length >= 2, `heartbeats sent (${client.comments.length})`)
  t.same(
    client.events.map((e) => e.data),
    ['<p>a\nb</p>', '<p>c</p>'],
    'heartbeats never split a frame'
  )
  // Every heartbeat stands between whole frames: strip them and the frames are intact.
  t.match(client.raw.replaceAll(':\n', ''), /^(?:data: [^\n]*\n)+\n(?:data: [^\n]*\n)+\n$/)
})

test('Last-Event-ID: the header is decoded as UTF-8; the lastEventId query serves clients without headers', async (t) => {
  const { app } = await makeApp()
  const seen: Array<string | null> = []
  app.get('/events', (_req, reply) => {
    seen.push(reply.sse([]).lastEventId)
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  // A browser sends the id's UTF-8 bytes; Node hands them over as Latin-1.
  const utf8AsLatin1 = Buffer.from('ñandú-42', 'utf8').toString('latin1')
  await (await connect(`${base}/events`, { 'last-event-id': utf8AsLatin1 })).ended
  await (await connect(`${base}/events?lastEventId=${encodeURIComponent('é-7')}`)).ended
  await (await connect(`${base}/events`, { 'last-event-id': Buffer.from([0xff, 0x41]).toString('latin1') })).ended
  await (await connect(`${base}/events`)).ended
  t.same(seen, ['ñandú-42', 'é-7', 'ÿA', null], 'invalid UTF-8 stays as sent')
})

test('a source that throws ends the stream cleanly, is logged, and the server stays up', async (t) => {
  const { app, logs } = await makeApp()
  app.get('/boom', (_req, reply) => {
    reply.sse(
      (async function* () {
        yield '<p>before</p>'
        throw new Error('source failed')
      })()
    )
  })
  app.get('/bad-item', (_req, reply) => {
    reply.sse([42 as unknown as string])
  })
  app.get('/ok', () => 'still up')
  const base = await listen(app)
  t.teardown(() => app.close())
  const boom = await connect(`${base}/boom`)
  await boom.ended
  t.same(
    boom.events.map((e) => e.data),
    ['<p>before</p>']
  )
  const bad = await connect(`${base}/bad-item`)
  await bad.ended
  t.same(bad.events, [])
  t.equal(await (await fetch(`${base}/ok`)).text(), 'still up')
  const errors = errorsIn(logs)
  t.equal(errors.length, 2)
  t.match(errors[0], { err: { message: 'source failed' } })
  t.match(errors[1], { err: { code: 'FST_ERR_HTML_SSE_ITEM_INVALID' } })
})

test('reply.sse() refuses what is neither a source nor options, with a coded error', async (t) => {
  const { app } = await makeApp()
  app.get('/string', (_req, reply) => {
    reply.sse('<p>not a source</p>' as never)
  })
  app.get('/topics', (_req, reply) => {
    reply.sse({ topics: [''] })
  })
  app.get('/topics-type', (_req, reply) => {
    reply.sse({ topics: 'news' as never })
  })
  app.get('/two-options', (_req, reply) => {
    reply.sse({} as never, {} as never)
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const cases: Array<[string, string]> = [
    ['/string', 'FST_ERR_HTML_SSE_SOURCE_INVALID'],
    ['/topics', 'FST_ERR_HTML_SSE_TOPIC_INVALID'],
    ['/topics-type', 'FST_ERR_HTML_SSE_OPTION_INVALID'],
    ['/two-options', 'FST_ERR_HTML_SSE_SOURCE_INVALID']
  ]
  for (const [path, code] of cases) {
    const res = await fetch(base + path)
    t.equal(res.status, 500, path)
    t.equal((await res.json()).code, code, path)
  }
  t.equal(app.sse.stats().connections, 0)
})

test('a source may be a function of the sink, e.g. a generator function that uses sink.signal', async (t) => {
  const { app, logs } = await makeApp()
  let stopped = false
  app.get('/events', (_req, reply) => {
    reply.sse(async function* (sink) {
      try {
        for (let n = 1; ; n++) {
          yield <Button n={n} />
          await sleep(10_000, undefined, { signal: sink.signal })
        }
      } finally {
        stopped = true
      }
    })
  })
  app.get('/bad', (_req, reply) => {
    reply.sse((() => 42) as never)
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.waitFor(1)
  t.equal(client.events[0]?.data, String(<Button n={1} />))
  client.close()
  await until(() => stopped, 2000, 'the generator to stop')
  const bad = await connect(`${base}/bad`)
  await bad.ended
  t.same(bad.events, [], 'a function that returns no iterable ends the stream')
  t.match(
    errorsIn(logs).map((l) => l.err?.code),
    ['FST_ERR_HTML_SSE_SOURCE_INVALID']
  )
  await until(() => app.sse.stats().connections === 0)
  t.same(
    errorsIn(logs).filter((l) => l.err?.code !== 'FST_ERR_HTML_SSE_SOURCE_INVALID'),
    []
  )
})

test('an async handler need not return, even with an onSend hook that awaits I/O; onSend does not see the stream', async (t) => {
  const { app, logs } = await makeApp()
  const sent: string[] = []
  app.addHook('onSend', async (req, _reply, payload) => {
    sent.push(req.url)
    await sleep(20)
    return payload
  })
  app.get('/events', async (_req, reply) => {
    await sleep(1)
    reply.sse(['<p>a</p>', '<p>b</p>'])
  })
  app.get('/marker', async () => 'marker')
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.ended
  // A final marker: an onSend (and its warning) for /events would have started first and ended earlier.
  t.equal((await app.inject('/marker')).body, 'marker')
  t.same(
    client.events.map((e) => e.data),
    ['<p>a</p>', '<p>b</p>']
  )
  t.same(
    logs.filter((l) => l.level >= 40),
    [],
    'no "reply already sent" warning, no error'
  )
  t.same(sent, ['/marker'], 'onSend hooks transform payloads; an event stream has none')
})
