/**
 * `fastify-html-sse/testing`: `openEvents` is the one SSE client, through
 * `app.inject()`, over a loopback socket to an app, or by URL to a listening
 * server, paced when asked; `collectEvents`, its short form, drives HTTP/1.1, HTTPS and HTTP/2
 * apps through `app.inject()` (no port), and HTTP/1.1 apps over a real loopback
 * connection on request; either way it leaves nothing open.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { test } from 'tap'
import { collectEvents, type OpenEventsOptions, openEvents } from '../lib/testing.js'
import { errorsIn, makeApp } from './helpers/app.js'
import { listen, settles, until } from './helpers/sse.js'

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
      message: /saw 0 of 1 events from \/quiet before the stream ended or 100ms passed/
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
      message: /saw 0 of 1 events from \/late before the stream ended or 50ms passed/
    })
    release()
    await until(() => answered, 5000, 'the route to answer')
    await until(() => app.sse.stats().connections === 0, 5000, 'the late stream to be hung up')
    await settles(app.close(), 'app.close()')
    t.same(errorsIn(logs), [])
  })
}

/** Opens `/events` of `app` as each kind of target: through inject, over a loopback socket, and by URL once it listens. */
const targets = {
  inject: (app: FastifyInstance, url: string, options: OpenEventsOptions = {}) =>
    openEvents(app, url, { ...options, transport: 'inject' }),
  socket: (app: FastifyInstance, url: string, options: OpenEventsOptions = {}) =>
    openEvents(app, url, { ...options, transport: 'socket' }),
  url: async (app: FastifyInstance, url: string, options: OpenEventsOptions = {}) => {
    if (!bases.has(app)) bases.set(app, await listen(app))
    return openEvents(bases.get(app) as string, url, options)
  }
} as const
const bases = new WeakMap<FastifyInstance, string>()

for (const [name, open] of Object.entries(targets)) {
  test(`openEvents (${name}): the head, events as their frames gave them, comments, raw text; waitFor, ended, close`, async (t) => {
    const { app, logs } = await makeApp()
    let closed = 0
    app.get('/events', (req, reply) => {
      reply.header('x-count', 3)
      const sink = reply.sse({ topics: ['news'] })
      void sink.closed.then(() => closed++)
      void sink.send('<p>first</p>', undefined, { id: String(req.headers['x-tab']) })
      void sink.comment('hello')
      void sink.send('<p>second</p>', 'named')
    })
    app.get('/short', (_req, reply) => {
      reply.sse(['<p>only</p>'])
    })
    t.teardown(() => app.close())
    const client = await open(app, '/events', { headers: { 'x-tab': '7' } })
    t.equal(client.status, 200)
    t.match(client.headers['content-type'], /^text\/event-stream/)
    t.equal(client.headers['x-count'], '3', 'header values are strings, as on the wire')
    t.same(await client.waitFor(2), [
      { data: '<p>first</p>', id: '7' },
      { event: 'named', data: '<p>second</p>' }
    ])
    t.equal(client.events[0]?.event, undefined, 'an unnamed frame is left unnamed')
    t.same(client.comments, ['hello'])
    t.match(client.raw, /: hello\n\n/)
    t.equal(client.body.readable, true)
    await until(() => app.sse.stats().topics.news === 1, 5000, 'the stream to subscribe')
    const id = await app.sse.publish('news', '<p>live</p>')
    t.same((await client.waitFor(3, 5000))[2], { data: '<p>live</p>', id })
    await Promise.all([client.close(), client.close()])
    await client.ended
    await until(() => closed === 1 && app.sse.stats().connections === 0, 5000, 'the stream to close')

    const short = await open(app, '/short')
    t.equal((await short.waitFor(1))[0]?.data, '<p>only</p>')
    await short.ended
    await t.rejects(short.waitFor(2, 1000), {
      code: 'FST_ERR_HTML_SSE_COLLECT_TIMEOUT',
      message: /saw 1 of 2 events from \S*\/short before the stream ended or 1000ms passed/
    })
    t.same(await short.waitFor(1), short.events, 'an ended stream still answers for what came')
    await short.close()
    await settles(app.close(), 'app.close()')
    t.same(errorsIn(logs), [], 'nothing logged as an error')
  })

  test(`openEvents (${name}) answers any head, and waitFor rejects with coded errors on a timeout and a non-SSE answer`, async (t) => {
    const { app } = await makeApp()
    app.get('/quiet', (_req, reply) => {
      reply.sse({ topics: ['quiet'] })
    })
    app.get('/html', () => '<p>not a stream</p>')
    t.teardown(() => app.close())
    const quiet = await open(app, '/quiet')
    await t.rejects(quiet.waitFor(1, 50), {
      code: 'FST_ERR_HTML_SSE_COLLECT_TIMEOUT',
      message: /saw 0 of 1 events from \S*\/quiet before the stream ended or 50ms passed/
    })
    await quiet.close()
    const html = await open(app, '/html')
    t.equal(html.status, 200)
    await t.rejects(html.waitFor(1), {
      code: 'FST_ERR_HTML_SSE_COLLECT_RESPONSE',
      message: /\/html, got status 200 with content-type text\/plain/
    })
    await html.close()
    const missing = await open(app, '/missing')
    t.equal(missing.status, 404, 'a 404 opens: the test reads its status')
    await t.rejects(missing.waitFor(1), { code: 'FST_ERR_HTML_SSE_COLLECT_RESPONSE', message: /status 404/ })
    await missing.close()
    await until(() => app.sse.stats().connections === 0, 5000, 'every stream to close')
    await settles(app.close(), 'app.close()')
  })

  test(`openEvents (${name}) with bytesPerSecond reads no faster than the pace`, async (t) => {
    const { app } = await makeApp()
    const html = `<p>${'x'.repeat(200)}</p>`
    app.get('/events', (_req, reply) => {
      reply.sse([html, html, html, html])
    })
    t.teardown(() => app.close())
    const bytesPerSecond = 2000
    const began = performance.now()
    const client = await open(app, '/events', { bytesPerSecond })
    const ahead = () => client.raw.length - ((performance.now() - began) / 1000) * bytesPerSecond
    const checks: number[] = []
    const watch = setInterval(() => checks.push(ahead()), 5)
    await client.waitFor(4)
    clearInterval(watch)
    checks.push(ahead())
    t.ok(client.raw.length > 800, 'everything came')
    t.ok(
      checks.every((over) => over <= 0),
      'never more than the pace allows since the start'
    )
    t.ok(performance.now() - began >= (client.raw.length / bytesPerSecond) * 1000, 'the pace set the time')
    await client.close()
    await settles(app.close(), 'app.close()')
  })
}

test('openEvents refuses what cannot work with a coded error, and gives up when its signal aborts', async (t) => {
  const { app } = await makeApp()
  app.get('/quiet', (_req, reply) => {
    reply.sse({ topics: ['quiet'] })
  })
  t.teardown(() => app.close())
  const base = await listen(app)
  await t.rejects(openEvents('https://127.0.0.1:1', '/quiet'), {
    code: 'FST_ERR_HTML_SSE_OPTION_INVALID',
    message: /must be an http:\/\/ URL or an app, got https:/
  })
  await t.rejects(openEvents(base, '/quiet', { transport: 'inject' }), {
    code: 'FST_ERR_HTML_SSE_OPTION_INVALID',
    message: /'inject' needs an app/
  })
  await t.rejects(openEvents(app, '/quiet', { transport: 'pigeon' as 'inject' }), {
    code: 'FST_ERR_HTML_SSE_OPTION_INVALID',
    message: /must be 'inject' or 'socket', got pigeon/
  })
  for (const bytesPerSecond of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    await t.rejects(openEvents(base, '/quiet', { bytesPerSecond }), {
      code: 'FST_ERR_HTML_SSE_OPTION_INVALID',
      message: /bytesPerSecond.*must be a positive number/
    })
  }
  const reason = new Error('given up')
  for (const target of [app, base]) {
    await t.rejects(openEvents(target, '/quiet', { signal: AbortSignal.abort(reason) }), reason)
  }
  // A refused connection is the error itself, signal or not.
  await t.rejects(openEvents('http://127.0.0.1:1', '/quiet', { signal: new AbortController().signal }), {
    code: 'ECONNREFUSED'
  })
  for (const target of [app, base]) {
    const giveUp = new AbortController()
    const client = await openEvents(target, '/quiet', { signal: giveUp.signal })
    await until(() => app.sse.stats().connections === 1, 5000, 'the stream to open')
    giveUp.abort()
    await client.ended
    await t.rejects(client.waitFor(1), { code: 'FST_ERR_HTML_SSE_COLLECT_TIMEOUT', message: /saw 0 of 1/ })
    await until(() => app.sse.stats().connections === 0, 5000, 'the aborted stream to close')
  }
  await settles(app.close(), 'app.close()')
})
