/**
 * `fastify-html-sse/testing`: `collectEvents` drives HTTP/1.1, HTTPS and HTTP/2
 * apps through `app.inject()` (no port), and HTTP/1.1 apps over a real loopback
 * connection on request; either way it leaves nothing open.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'tap'
import { collectEvents } from '../lib/testing.js'
import { errorsIn, makeApp } from './helpers/app.js'
import { settles, until } from './helpers/sse.js'

/** A self-signed certificate for 127.0.0.1, made here: no network, no fixture to expire. */
function selfSigned(): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fastify-html-sse-tls-'))
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem')
      ],
      { stdio: 'ignore' }
    )
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const tls = selfSigned()
const servers = {
  'HTTP/1.1': {},
  HTTPS: { https: tls },
  'HTTP/2 (h2c)': { http2: true },
  'HTTP/2 over TLS': { http2: true, https: { ...tls, allowHTTP1: true } }
} as const

for (const [name, server] of Object.entries(servers)) {
  test(`collectEvents on an ${name} app: frames, ids, headers and live events, then nothing left open`, async (t) => {
    const { app, logs } = await makeApp({}, server as Parameters<typeof makeApp>[1])
    const seen: string[] = []
    let closed = 0
    app.get('/events', (req, reply) => {
      seen.push(String(req.headers['x-tab']))
      const sink = reply.sse({ topics: ['news'] })
      void sink.closed.then(() => closed++)
      void sink.send('<p>first\nline</p>', 'hello', { id: 'a' })
    })
    const responses: number[] = []
    app.addHook('onResponse', async (_req, reply) => {
      responses.push(reply.statusCode)
    })
    t.teardown(() => app.close())
    const pending = collectEvents(app, '/events', { count: 2, headers: { 'x-tab': '7' } })
    await until(() => app.sse.stats().topics.news === 1, 5000, 'the stream to subscribe')
    const id = await app.sse.publish('news', '<p>live</p>')
    const events = await pending
    t.same(events, [
      { event: 'hello', data: '<p>first\nline</p>', id: 'a' },
      { event: 'message', data: '<p>live</p>', id }
    ])
    t.same(seen, ['7'], 'request headers reach the route')
    t.equal(closed, 1, 'the stream closed when collectEvents returned')
    t.equal(app.sse.stats().connections, 0)
    await settles(app.close(), 'app.close()')
    t.same(errorsIn(logs), [], 'nothing logged as an error')
  })
}

test('collectEvents over a real loopback connection (transport: socket), listening or not', async (t) => {
  const { app } = await makeApp()
  app.get('/events', (_req, reply) => {
    reply.sse(['<p>one</p>', { html: '<p>two</p>', event: 'second', id: '2' }])
  })
  t.teardown(() => app.close())
  t.same(await collectEvents(app, '/events', { count: 2, transport: 'socket' }), [
    { event: 'message', data: '<p>one</p>', id: undefined },
    { event: 'second', data: '<p>two</p>', id: '2' }
  ])
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.equal((await collectEvents(app, '/events', { count: 1, transport: 'socket' })).length, 1)
  await until(() => app.sse.stats().connections === 0, 5000, 'the streams to close')
  await settles(app.close(), 'app.close()')
})

test('transport: socket refuses HTTPS and HTTP/2 apps, and an unknown transport, with a coded error', async (t) => {
  for (const server of [{ https: tls }, { http2: true }] as const) {
    const { app } = await makeApp({}, server as Parameters<typeof makeApp>[1])
    t.teardown(() => app.close())
    await t.rejects(collectEvents(app, '/events', { count: 1, transport: 'socket' }), {
      code: 'FST_ERR_HTML_SSE_OPTION_INVALID',
      message: /'socket' needs a plain HTTP\/1\.1 app/
    })
  }
  const { app } = await makeApp()
  t.teardown(() => app.close())
  await t.rejects(collectEvents(app, '/events', { count: 1, transport: 'carrier pigeon' as 'inject' }), {
    code: 'FST_ERR_HTML_SSE_OPTION_INVALID'
  })
})

for (const transport of ['inject', 'socket'] as const) {
  test(`collectEvents (${transport}) rejects with coded errors on an early end, a timeout and a non-SSE response`, async (t) => {
    const { app } = await makeApp()
    app.get('/short', (_req, reply) => {
      reply.sse(['<p>only one</p>'])
    })
    app.get('/quiet', (_req, reply) => {
      reply.sse({ topics: ['quiet'] })
    })
    app.get('/html', () => '<p>not a stream</p>')
    app.get('/empty', (_req, reply) => {
      reply.code(204).send()
    })
    t.teardown(() => app.close())
    await t.rejects(collectEvents(app, '/short', { count: 2, transport }), {
      code: 'FST_ERR_HTML_SSE_COLLECT_TIMEOUT',
      message: /saw 1 of 2 events from \/short/
    })
    await t.rejects(collectEvents(app, '/quiet', { count: 1, timeoutMs: 100, transport }), {
      code: 'FST_ERR_HTML_SSE_COLLECT_TIMEOUT',
      message: /saw 0 of 1 events from \/quiet within 100ms/
    })
    await t.rejects(collectEvents(app, '/html', { count: 1, transport }), {
      code: 'FST_ERR_HTML_SSE_COLLECT_RESPONSE',
      message: /status 200 with content-type text\/plain/
    })
    await t.rejects(collectEvents(app, '/empty', { count: 1, transport }), {
      code: 'FST_ERR_HTML_SSE_COLLECT_RESPONSE',
      message: /status 204 with content-type none/
    })
    await t.rejects(collectEvents(app, '/missing', { count: 1, transport }), {
      code: 'FST_ERR_HTML_SSE_COLLECT_RESPONSE',
      message: /404/
    })
    await until(() => app.sse.stats().connections === 0, 5000, 'every stream to close')
    await settles(app.close(), 'app.close()')
  })
}

for (const transport of ['inject', 'socket'] as const) {
  test(`collectEvents (${transport}) that times out before the head leaves nothing open, and logs no error`, async (t) => {
    const { app, logs } = await makeApp()
    let answered = false
    let release!: () => void
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    app.get('/late', async (_req, reply) => {
      await held
      reply.sse({ topics: ['late'] })
      answered = true
    })
    t.teardown(() => app.close())
    await t.rejects(collectEvents(app, '/late', { count: 1, timeoutMs: 50, transport }), {
      code: 'FST_ERR_HTML_SSE_COLLECT_TIMEOUT',
      message: /saw 0 of 1 events from \/late within 50ms/
    })
    release()
    await until(() => answered, 5000, 'the route to answer')
    await until(() => app.sse.stats().connections === 0, 5000, 'the late stream to be hung up')
    await settles(app.close(), 'app.close()')
    t.same(errorsIn(logs), [])
  })
}
