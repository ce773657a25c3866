/**
 * Every path through `reply.sse()` ends in an open stream that will end or in a
 * clean refusal, whatever a route or a client does, over real sockets.
 */
import { EventEmitter, on, once } from 'node:events'
import { request } from 'node:http'
import { connect as h2connect, constants as h2constants } from 'node:http2'
import { type AddressInfo, connect as netConnect } from 'node:net'
import { test } from 'tap'
import htmlSse, { FST_ERR_HTML_SSE_REGISTERED_TWICE, memoryBroker, type SseSink } from '../lib/index.js'
import { errorsIn, makeApp } from './helpers/app.js'
import { answerOf, connect, deferred, listen, parseAll, settles, until } from './helpers/sse.js'

/** Collects unhandled rejections while a test runs (and keeps them from crashing the file). */
function unhandled(t: { teardown(fn: () => void): void }): unknown[] {
  const seen: unknown[] = []
  const onRejection = (reason: unknown) => seen.push(reason)
  process.on('unhandledRejection', onRejection)
  t.teardown(() => {
    process.off('unhandledRejection', onRejection)
  })
  return seen
}

test('a source whose iterator cannot be made ends its stream, is logged, and the server stays up', async (t) => {
  const rejections = unhandled(t)
  const { app, logs } = await makeApp()
  const locked = new ReadableStream<string>({
    start(controller) {
      controller.enqueue('<p>never</p>')
    }
  })
  locked.getReader()
  app.get('/locked', (_req, reply) => {
    reply.sse(locked as unknown as AsyncIterable<string>)
  })
  app.get('/throws', (_req, reply) => {
    reply.sse({
      [Symbol.asyncIterator]() {
        throw new Error('no iterator for you')
      }
    })
  })
  app.get('/function-throws', (_req, reply) => {
    reply.sse(() => {
      throw new Error('bad input')
    })
  })
  app.get('/async-function', (_req, reply) => {
    reply.sse((async () => {
      throw new Error('an async function is not a source')
    }) as never)
  })
  app.get('/next-throws', (_req, reply) => {
    reply.sse({
      [Symbol.iterator]() {
        return {
          next() {
            throw new Error('next failed')
          }
        }
      }
    })
  })
  app.get('/ok', (_req, reply) => {
    reply.sse(['<p>still up</p>'])
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  for (const path of ['/locked', '/throws', '/function-throws', '/async-function', '/next-throws']) {
    const client = await connect(`${base}${path}`)
    await settles(client.ended, `the stream of ${path}`, 20_000)
    t.equal(client.res.statusCode, 200, `${path}: the stream opened`)
    t.same(client.events, [], `${path}: and ended without events`)
  }
  await until(() => app.sse.stats().connections === 0)
  const errors = errorsIn(logs)
  t.equal(errors.length, 5, 'each failure is logged as an error')
  t.match(
    errors.map((l) => l.err?.message).join('\n'),
    /locked[\s\S]*no iterator[\s\S]*bad input[\s\S]*Iterable[\s\S]*next failed/i
  )
  const ok = await connect(`${base}/ok`)
  await ok.waitFor(1)
  t.equal(ok.events[0]?.data, '<p>still up</p>')
  t.same(rejections, [], 'no unhandled rejection')
})

test('a client that left before reply.sse() gets no stream: nothing registered, signal aborted, no source started', async (t) => {
  const { app, logs } = await makeApp()
  const left = deferred()
  const entered = deferred()
  const result = deferred<{ sink: SseSink; started: boolean }>()
  app.get('/slow', async (request, reply) => {
    request.raw.once('close', () => left.resolve())
    entered.resolve()
    await left.promise
    let started = false
    const sink = reply.sse(
      async function* () {
        started = true
        yield '<p>never</p>'
      },
      { topics: ['zombie'] }
    )
    result.resolve({ sink, started })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const req = request(`${base}/slow`, { agent: false })
  req.on('error', () => {})
  req.end()
  await entered.promise
  req.destroy()
  const { sink, started } = await result.promise
  t.equal(started, false, 'the source function never ran')
  t.equal(sink.signal.aborted, true)
  await settles(sink.closed, 'sink.closed', 20_000)
  t.equal(await sink.send('<p>x</p>'), false)
  t.same(app.sse.stats().connections, 0)
  t.same({ ...app.sse.stats().topics }, {})
  t.same(errorsIn(logs), [])
})

test('HTTP/2: a stream reset before reply.sse() gets no stream', async (t) => {
  const { app, logs } = await makeApp({}, { http2: true })
  const reset = deferred()
  const result = deferred<SseSink>()
  app.get('/slow', async (request, reply) => {
    request.raw.once('close', () => reset.resolve())
    await reset.promise
    result.resolve(reply.sse({ topics: ['zombie'] }))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const { port } = app.server.address() as AddressInfo
  const session = h2connect(`http://127.0.0.1:${port}`)
  t.teardown(() => session.close())
  const stream = session.request({ ':path': '/slow' })
  stream.on('error', () => {})
  await once(session, 'remoteSettings')
  stream.close(h2constants.NGHTTP2_CANCEL)
  const sink = await result.promise
  t.equal(sink.signal.aborted, true)
  await settles(sink.closed, 'sink.closed', 20_000)
  t.equal(app.sse.stats().connections, 0)
  t.same({ ...app.sse.stats().topics }, {})
  t.same(errorsIn(logs), [])
})

for (const forceCloseConnections of [undefined, true] as const) {
  test(`a stream opened after app.close() began ends at once with a retry hint (forceCloseConnections: ${forceCloseConnections ?? 'default'})`, async (t) => {
    const { app, logs } = await makeApp({ drainMs: 1000 }, forceCloseConnections ? { forceCloseConnections } : {})
    const release = deferred()
    const entered = deferred()
    let started = false
    app.get('/late', async (_req, reply) => {
      entered.resolve()
      await release.promise
      reply.sse(
        async function* () {
          started = true
          yield '<p>never</p>'
        },
        { topics: ['late'] }
      )
    })
    const closing = deferred()
    app.addHook('preClose', (done) => {
      closing.resolve()
      done()
    })
    const base = await listen(app)
    const pending = connect(`${base}/late`)
    await entered.promise
    const closed = app.close()
    await closing.promise
    release.resolve()
    if (forceCloseConnections) {
      // Fastify destroys every connection, in-flight requests included: the handler finds its client gone.
      await t.rejects(pending, /socket hang up/)
      await settles(closed, 'app.close()', 20_000)
    } else {
      const client = await pending
      await settles(client.ended, 'the late stream')
      await settles(closed, 'app.close()', 20_000)
      t.match(client.raw, /^event: retry\nretry: (\d+)\n\n$/)
      const hint = Number(/retry: (\d+)/.exec(client.raw)?.[1])
      t.ok(hint >= 0 && hint <= 1000, `the hint ${hint} is within [0, drainMs]`)
    }
    t.equal(started, false, 'no source started')
    t.equal(app.sse.stats().connections, 0)
    t.same(errorsIn(logs), [])
  })
}

test('HEAD on a stream route answers the head, starts no source, and the connection stays usable', async (t) => {
  const { app, logs } = await makeApp()
  let started = 0
  app.get('/events', (_req, reply) => {
    reply.sse(
      async function* () {
        started++
        yield '<p>x</p>'
      },
      { topics: ['t'] }
    )
  })
  app.get('/ping', () => 'pong')
  const base = await listen(app)
  t.teardown(() => app.close())
  const { port } = app.server.address() as AddressInfo
  const socket = netConnect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  let text = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => {
    text += chunk
  })
  socket.write('HEAD /events HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n')
  await until(() => text.endsWith('pong'), 10_000, 'the pipelined request to be answered')
  const [head] = text.split('\r\n\r\n')
  t.match(head, /^HTTP\/1\.1 200 OK/)
  t.match(head, /content-type: text\/event-stream; charset=utf-8/i)
  t.match(text, /HTTP\/1\.1 200 OK[\s\S]*\r\n\r\npong$/)
  t.equal(started, 0, 'no source started')
  t.equal(app.sse.stats().connections, 0)
  t.same({ ...app.sse.stats().topics }, {})
  t.ok(base)
  t.same(errorsIn(logs), [])
})

test('an iterator the route made is released when its stream does not open: HEAD, refused', async (t) => {
  const { app, logs } = await makeApp({ maxConnections: 1 })
  const bus = new EventEmitter()
  let returned = 0
  app.get('/events', (_req, reply) => {
    // Made before reply.sse(): it listens on the bus from now on.
    const ticks = on(bus, 'tick')
    const source: AsyncIterable<string> = {
      [Symbol.asyncIterator]: () => ({
        next: async () => ({ done: false, value: String((await ticks.next()).value) }),
        return: async () => {
          returned++
          await ticks.return?.()
          return { done: true as const, value: undefined }
        }
      })
    }
    reply.sse(source)
  })
  app.head('/locked', (_req, reply) => {
    // Its iterator cannot be made (the stream is locked): nothing to release, nothing thrown.
    const locked = new ReadableStream<string>()
    locked.getReader()
    reply.sse(locked as unknown as AsyncIterable<string>)
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const open = await connect(`${base}/events`)
  await until(() => app.sse.stats().connections === 1)
  t.equal(bus.listenerCount('tick'), 1, 'the open stream listens')
  for (let i = 0; i < 5; i++) {
    t.equal((await answerOf(`${base}/events`)).status, 503, 'refused')
    t.equal((await answerOf(`${base}/events`, { method: 'HEAD' })).status, 200, 'HEAD')
  }
  await until(() => returned === 10, 3000, 'every unopened source to be returned')
  t.equal((await answerOf(`${base}/locked`, { method: 'HEAD' })).status, 200, 'HEAD with a locked stream as the source')
  t.equal(bus.listenerCount('tick'), 1, 'only the open stream still listens')
  open.close()
  await until(() => bus.listenerCount('tick') === 0, 3000, 'the open stream to let go when its client leaves')
  t.same(errorsIn(logs), [])
})

test('50,000 topics on one stream: subscribed, listed and released', async (t) => {
  const { app } = await makeApp()
  const count = 50_000
  app.get('/many', (_req, reply) => {
    const sink = reply.sse()
    for (let i = 0; i < count; i++) sink.subscribe(`t${i}`)
    sink.subscribe('t0')
    for (let i = 0; i < count; i += 2) sink.unsubscribe(`t${i}`)
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/many`)
  await until(() => Object.keys(app.sse.stats().topics).length === count / 2)
  await app.sse.publish('t1', '<p>odd</p>')
  await app.sse.publish('t0', '<p>even, unsubscribed</p>')
  await app.sse.publish('t3', '<p>marker</p>')
  await client.waitFor(2)
  t.same(
    client.events.map((e) => e.data),
    ['<p>odd</p>', '<p>marker</p>']
  )
  client.close()
  await until(() => app.sse.stats().connections === 0)
  t.same(Object.keys(app.sse.stats().topics).length, 0)
})

test('stats().topics is safe for any topic name', async (t) => {
  const { app } = await makeApp()
  const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty']
  app.get('/odd', (_req, reply) => {
    reply.sse({ topics: names })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/odd`)
  await until(() => Object.keys(app.sse.stats().topics).length === names.length)
  const topics = app.sse.stats().topics
  for (const name of names) t.equal(Object.getOwnPropertyDescriptor(topics, name)?.value, 1, name)
  await app.sse.publish('__proto__', '<p>proto</p>')
  await client.waitFor(1)
  t.equal(client.events[0]?.data, '<p>proto</p>')
  client.close()
})

test('registering the plugin twice on one server fails with a clear error', async (t) => {
  const { app } = await makeApp()
  await t.rejects(async () => app.register(htmlSse).ready(), { code: 'FST_ERR_HTML_SSE_REGISTERED_TWICE' })
  const { default: Fastify } = await import('fastify')
  const siblings = Fastify()
  siblings.register(async (a) => {
    await a.register(htmlSse)
  })
  siblings.register(async (b) => {
    await b.register(htmlSse)
  })
  const err = await siblings.ready().then(
    () => null,
    (e: unknown) => e
  )
  t.ok(err instanceof FST_ERR_HTML_SSE_REGISTERED_TWICE)
  await siblings.close()
})

test('who closes what: a broker passed to apps stays open after they close; the default one is closed with its app', async (t) => {
  const broker = memoryBroker()
  const one = await makeApp({ broker })
  const two = await makeApp({ broker })
  two.app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['shared'] })
  })
  const base = await listen(two.app)
  const client = await connect(`${base}/events`)
  await until(() => two.app.sse.stats().topics.shared === 1)
  await one.app.close()
  await two.app.sse.publish('shared', '<p>after the first close</p>')
  await client.waitFor(1)
  t.equal(client.events[0]?.data, '<p>after the first close</p>', 'closing one app cut the other off from nothing')
  await two.app.close()
  const id = await broker.publish('shared', 'data: x\n\n')
  t.match(id, /^\d+-\d+$/, 'the broker passed in is still open: its maker closes it')
  await broker.close()
  await t.rejects(broker.publish('shared', 'data: y\n\n'), { code: 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE' })

  const own = await makeApp()
  await own.app.ready()
  await own.app.close()
  await t.rejects(
    own.app.sse.publish('t', '<p>x</p>'),
    { code: 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE' },
    'the default broker closed with its app'
  )
})

for (const [label, initialWindowSize] of [
  ['a small flow-control window (64 KB, Node client default)', 65_535],
  ['a browser-sized window (6 MB)', 6 * 1024 * 1024]
] as const) {
  test(`HTTP/2 with ${label}: an awaited burst never sheds a stream that keeps reading`, async (t) => {
    const { app } = await makeApp({ maxBufferedBytes: 64 * 1024 }, { http2: true })
    app.get('/live', (_req, reply) => {
      reply.sse({ topics: ['burst'] })
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    t.teardown(() => app.close())
    const { port } = app.server.address() as AddressInfo
    const session = h2connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize } })
    t.teardown(() => session.close())
    const streams = Array.from({ length: 3 }, () => session.request({ ':path': '/live' }))
    const bodies = streams.map(() => [] as string[])
    streams.forEach((stream, i) => {
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => bodies[i]?.push(chunk))
    })
    await until(() => app.sse.stats().topics.burst === 3)
    const n = 2000
    const filler = 'y'.repeat(1000)
    for (let i = 0; i < n; i++) await app.sse.publish('burst', `<p>${i} ${filler}</p>`)
    for (const body of bodies) await until(() => parseAll(body).length === n, 30_000, 'every event')
    t.equal(app.sse.stats().dropped, 0)
    for (const body of bodies) {
      const events = parseAll(body)
      t.equal(events.at(-1)?.data, `<p>${n - 1} ${filler}</p>`)
    }
  })
}
