// Server child of the fan-out benchmark. One process per server kind:
//   node --expose-gc bench/server.mjs <kind>
// It listens on 127.0.0.1 (ephemeral port), serves GET /events as an SSE
// stream, and is driven by the parent over the IPC channel (see handlers at
// the bottom). Every kind exposes the same three things to the harness:
// publish(html) -> (maybe) promise, count() -> open subscribed streams,
// and a close() for shutdown.

import { existsSync } from 'node:fs'
import http from 'node:http'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { frameHtml, renderHtml } from './payload.mjs'

const hrtime = process.hrtime.bigint
const kind = process.argv[2]
const noop = () => {}
const FASTIFY_OPTS = { logger: false }

const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache',
  connection: 'keep-alive'
}

/** The upper limit: node:http, one pre-built Buffer written to every response. */
async function makeRaw() {
  const clients = new Set()
  const server = http.createServer((req, res) => {
    if (req.url !== '/events') {
      res.statusCode = 404
      res.end()
      return
    }
    res.writeHead(200, SSE_HEADERS)
    res.flushHeaders()
    clients.add(res)
    res.on('close', () => clients.delete(res))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: server.address().port,
    count: () => clients.size,
    publish(html) {
      const buf = Buffer.from(frameHtml(html))
      for (const res of clients) res.write(buf)
    }
  }
}

/**
 * Not a library: the Fastify floor. A Fastify route that hijacks the reply and
 * then does exactly what `raw` does (one pre-built Buffer per publish written
 * to every reply.raw). Shows what Fastify itself costs per connection / event.
 */
async function makeFastifyRaw() {
  const { default: Fastify } = await import('fastify')
  const app = Fastify(FASTIFY_OPTS)
  const clients = new Set()
  app.get('/events', (_request, reply) => {
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, SSE_HEADERS)
    res.flushHeaders()
    clients.add(res)
    res.on('close', () => clients.delete(res))
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    port: app.server.address().port,
    count: () => clients.size,
    publish(html) {
      const buf = Buffer.from(frameHtml(html))
      for (const res of clients) res.write(buf)
    }
  }
}

/** Fastify 5 + @fastify/sse: keep-alive route, reply.sse.send(html) on every reply. */
async function makeFastifySse() {
  const { default: Fastify } = await import('fastify')
  const { default: fastifySse } = await import('@fastify/sse')
  const app = Fastify(FASTIFY_OPTS)
  await app.register(fastifySse, { heartbeatInterval: 0 })
  const replies = new Set()
  app.get('/events', { sse: 'only' }, async (_request, reply) => {
    reply.sse.keepAlive()
    reply.sse.sendHeaders()
    reply.raw.flushHeaders() // let the client see the 200 before the first event
    replies.add(reply)
    reply.sse.onClose(() => replies.delete(reply))
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    port: app.server.address().port,
    count: () => replies.size,
    publish(html) {
      // A string is framed as one `data:` line per line (no JSON serializer).
      for (const reply of replies) reply.sse.send(html).catch(noop)
    }
  }
}

/**
 * Fastify 5 + better-sse: the route hijacks the reply and hands the raw
 * request/response to createSession; sessions join one channel; publish is
 * channel.broadcast(html). better-sse writes `data:` + the serialized value as
 * ONE field and does not split lines, and its default serializer is
 * JSON.stringify; to get one `data:` line per HTML line we pass a serializer
 * that continues every line as a new `data: ` field (leading space so that the
 * indentation of the HTML survives the parser's one-space strip).
 */
async function makeBetterSse() {
  const { default: Fastify } = await import('fastify')
  const { createSession, createChannel } = await import('better-sse')
  const app = Fastify(FASTIFY_OPTS)
  const channel = createChannel()
  const serializer = (html) => ` ${String(html).replaceAll('\n', '\ndata: ')}`
  app.get('/events', async (request, reply) => {
    reply.hijack()
    const session = await createSession(request.raw, reply.raw, { keepAlive: null, serializer })
    channel.register(session)
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    port: app.server.address().port,
    count: () => channel.sessionCount,
    publish(html) {
      channel.broadcast(html, 'message')
    }
  }
}

/**
 * Fastify 5 + fastify-sse-v2: "sending individual events": the first
 * reply.sse() call hijacks and starts the reply's internal pushable source;
 * every publish does reply.sse({ data: html }) on every open reply.
 */
async function makeFastifySseV2() {
  const { default: Fastify } = await import('fastify')
  const { FastifySSEPlugin } = await import('fastify-sse-v2')
  const app = Fastify(FASTIFY_OPTS)
  await app.register(FastifySSEPlugin, { retryDelay: false })
  const replies = new Set()
  app.get('/events', (request, reply) => {
    // A comment is the only payload-free thing it can send; it flushes the head.
    reply.sse({ comment: 'connected' })
    replies.add(reply)
    request.socket.on('close', () => {
      replies.delete(reply)
      reply.sseContext?.source?.end()
    })
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    port: app.server.address().port,
    count: () => replies.size,
    publish(html) {
      const message = { data: html }
      for (const reply of replies) reply.sse(message)
    }
  }
}

/** The built plugin: BENCH_OURS_ENTRY, else the package's own entry (self-reference, dist/lib/index.js), else ../dist/index.js. */
async function loadOurs() {
  // the parent passes a snapshot of the build taken at the start of the run
  if (process.env.BENCH_OURS_ENTRY) return import(pathToFileURL(process.env.BENCH_OURS_ENTRY).href)
  try {
    return await import('fastify-html-sse')
  } catch (err) {
    const fallback = new URL('../dist/index.js', import.meta.url)
    if (existsSync(fileURLToPath(fallback))) return import(fallback.href)
    throw new Error(`cannot load the built plugin (run npm run build): ${err.message}`)
  }
}

/** Fastify 5 + this project's plugin, built (npm run build / npx tsc). */
async function makeOurs() {
  const { default: Fastify } = await import('fastify')
  const { default: htmlSse } = await loadOurs()
  const app = Fastify(FASTIFY_OPTS)
  await app.register(htmlSse, { heartbeatMs: 0, replay: 0 })
  app.get('/events', (_request, reply) => {
    reply.sse({ topics: ['bench'] })
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    port: app.server.address().port,
    count: () => app.sse.stats().connections,
    publish: (html) => app.sse.publish('bench', html),
    stats: () => app.sse.stats()
  }
}

const makers = {
  raw: makeRaw,
  'fastify-raw': makeFastifyRaw,
  'fastify-sse': makeFastifySse,
  'better-sse': makeBetterSse,
  'fastify-sse-v2': makeFastifySseV2,
  ours: makeOurs
}

const yieldIO = () => new Promise((resolve) => setImmediate(resolve))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function cpuMs(since) {
  const d = process.cpuUsage(since)
  return { user: d.user / 1000, system: d.system / 1000 }
}

let srv
let burstCpu0 = null

async function mem() {
  for (let i = 0; i < 4; i++) {
    globalThis.gc()
    await sleep(20)
  }
  const m = process.memoryUsage()
  return { heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers }
}

/** K awaited publishes as fast as possible, yielding to I/O after each one. */
async function burst({ k, seq0 }) {
  burstCpu0 = process.cpuUsage()
  const t0 = hrtime()
  for (let i = 0; i < k; i++) {
    await srv.publish(renderHtml(seq0 + i, hrtime()))
    await yieldIO()
  }
  const t1 = hrtime()
  return { t0: Number(t0), sendNs: Number(t1 - t0) }
}

/** `count` publishes at `rate`/s on a drift-free schedule; the timestamp is taken just before publish. */
async function paced({ rate, count, seq0 }) {
  const stepNs = Math.round(1e9 / rate)
  const cpu0 = process.cpuUsage()
  const start = hrtime()
  let late = 0
  for (let i = 0; i < count; i++) {
    const dueMs = ((i + 1) * stepNs - Number(hrtime() - start)) / 1e6
    if (dueMs > 0) await sleep(Math.ceil(dueMs))
    else if (dueMs < -stepNs / 1e6) late++ // more than one period behind schedule
    await srv.publish(renderHtml(seq0 + i, hrtime()))
  }
  return { late, cpu: cpuMs(cpu0) }
}

/**
 * CPU speed probe: a fixed integer loop, timed on this (pinned) core. On a
 * VM the same work can take much longer when the host is busy (e.g. the SMT
 * sibling of our vCPU); the parent uses this to spot disturbed measurements.
 */
function spin(n) {
  let x = 0x9e3779b9 | 0
  for (let i = 0; i < n; i++) x = (Math.imul(x ^ (x >>> 15), 0x85ebca6b) + i) | 0
  return x
}
let spinSink = 0
function calib() {
  for (let i = 0; i < 3; i++) spinSink ^= spin(100_000) // warm
  let best = Infinity
  for (let i = 0; i < 5; i++) {
    const t = process.hrtime.bigint()
    spinSink ^= spin(1_000_000)
    const d = Number(process.hrtime.bigint() - t)
    if (d < best) best = d
  }
  return { ns: best, sink: spinSink & 1 }
}

const handlers = {
  calib,
  count: () => ({ count: srv.count() }),
  mem,
  burst,
  burstCpu: () => ({ cpu: cpuMs(burstCpu0) }),
  paced,
  stats: () => ({ stats: srv.stats ? srv.stats() : null }),
  exit: () => {
    setImmediate(() => process.exit(0))
    return {}
  }
}

process.on('message', async (msg) => {
  try {
    const result = await handlers[msg.cmd](msg.args ?? {})
    process.send({ id: msg.id, ok: true, ...result })
  } catch (err) {
    process.send({ id: msg.id, ok: false, error: String(err?.stack ?? err) })
  }
})
process.on('disconnect', () => process.exit(0))

try {
  if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc')
  const make = makers[kind]
  if (!make) throw new Error(`unknown kind ${kind}`)
  srv = await make()
  process.send({ type: 'ready', port: srv.port, pid: process.pid })
} catch (err) {
  process.send({ type: 'failed', error: String(err?.stack ?? err) })
  setImmediate(() => process.exit(1))
}
