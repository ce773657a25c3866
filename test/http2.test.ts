import { connect as h2connect } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { test } from 'tap'
import { errorsIn, makeApp } from './helpers/app.js'
import { deferred, parseAll, settles, until } from './helpers/sse.js'

test('HTTP/2: frames arrive, no connection-specific headers, a closed stream frees the sink', async (t) => {
  const { app, logs } = await makeApp({}, { http2: true })
  app.get('/once', (_req, reply) => {
    reply.sse(['<p>one</p>', { html: '<p>two</p>', event: 'second', id: '2' }])
  })
  app.get('/live', (_req, reply) => {
    reply.sse({ topics: ['h2'] })
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const { port } = app.server.address() as AddressInfo
  const session = h2connect(`http://127.0.0.1:${port}`)
  t.teardown(() => session.close())

  const once = session.request({ ':path': '/once', accept: 'text/event-stream' })
  const headers = await new Promise<Record<string, unknown>>((resolve) => once.on('response', resolve))
  let body = ''
  once.setEncoding('utf8')
  once.on('data', (chunk: string) => {
    body += chunk
  })
  await new Promise((resolve) => once.on('end', resolve))
  t.equal(headers[':status'], 200)
  t.equal(headers['content-type'], 'text/event-stream; charset=utf-8')
  for (const name of ['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection']) {
    t.notOk(name in headers, `no ${name} header`)
  }
  t.same(
    parseAll(body).map((e) => [e.event, e.data, e.id]),
    [
      [undefined, '<p>one</p>', undefined],
      ['second', '<p>two</p>', '2']
    ]
  )

  const live = session.request({ ':path': '/live', accept: 'text/event-stream' })
  let liveBody = ''
  live.setEncoding('utf8')
  live.on('data', (chunk: string) => {
    liveBody += chunk
  })
  await until(() => app.sse.stats().topics.h2 === 1)
  await app.sse.publish('h2', '<p>pushed\nover h2</p>', 'news')
  await until(() => parseAll(liveBody).length === 1)
  t.equal(parseAll(liveBody)[0]?.data, '<p>pushed\nover h2</p>')
  live.close()
  await until(() => app.sse.stats().connections === 0, 2000, 'the sink to close')
  t.same(errorsIn(logs), [])
})

test('HTTP/2: app.close() is prompt with an open stream', async (t) => {
  const { app } = await makeApp({}, { http2: true })
  app.get('/live', (_req, reply) => {
    reply.sse({ topics: ['h2'] })
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  const session = h2connect(`http://127.0.0.1:${port}`)
  session.on('error', () => {})
  const live = session.request({ ':path': '/live' })
  live.on('error', () => {})
  live.resume()
  await until(() => app.sse.stats().connections === 1)
  // On Node < 24 an idle HTTP/2 session would hold close() open; 10 s only turns that hang into a failure.
  await settles(app.close(), 'app.close()', 10_000)
  t.equal(app.sse.stats().connections, 0)
  session.destroy()
})

test('HTTP/2 with Fastify defaults: close() is prompt with a stream whose client stopped reading, and with one opened during close', async (t) => {
  const { app, logs } = await makeApp({ maxBufferedBytes: 256 * 1024 * 1024 }, { http2: true })
  const release = deferred()
  const entered = deferred()
  app.get('/live', (_req, reply) => {
    reply.sse({ topics: ['h2'] })
  })
  app.get('/late', async (_req, reply) => {
    entered.resolve()
    await release.promise
    reply.sse({ topics: ['h2'] })
  })
  const closing = deferred()
  app.addHook('preClose', (done) => {
    closing.resolve()
    done()
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  // The stalled client: its session reads nothing once the stream's window is full.
  const stalled = h2connect(`http://127.0.0.1:${port}`)
  stalled.on('error', () => {})
  t.teardown(() => stalled.destroy())
  const stream = stalled.request({ ':path': '/live', accept: 'text/event-stream' })
  stream.on('error', () => {})
  stream.pause()
  await until(() => app.sse.stats().connections === 1)
  for (let i = 0; i < 50; i++) await app.sse.publish('h2', `<p>${i}</p>${'x'.repeat(64 * 1024)}`)
  // The late client: another session, whose stream reaches the handler and waits there.
  const lateSession = h2connect(`http://127.0.0.1:${port}`)
  lateSession.on('error', () => {})
  t.teardown(() => lateSession.destroy())
  const late = lateSession.request({ ':path': '/late', accept: 'text/event-stream' })
  late.on('error', () => {})
  let lateBody = ''
  late.setEncoding('utf8')
  late.on('data', (chunk: string) => {
    lateBody += chunk
  })
  await entered.promise
  const closed = app.close()
  await closing.promise
  release.resolve()
  // Without closing both sessions this hung for good; 20 s only turns a hang into a failure.
  await settles(closed, 'app.close()', 20_000)
  t.match(lateBody, /^event: retry\nretry: \d+\n\n$/, 'the late stream got its hint')
  t.equal(app.sse.stats().connections, 0)
  t.same(errorsIn(logs), [])
})
