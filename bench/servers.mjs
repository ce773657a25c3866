// A server child: `new Child(name, 'servers.mjs', [JSON.stringify(options)])`, serving GET /events as an SSE stream
// on 127.0.0.1 and answering the parent's rpc calls (handlers at the bottom). options: { kind, ours (the private
// build's directory), broker: 'memory' | 'redis' | 'postgres', url, prefix, redis (extra redisBroker options), table,
// postgres (extra postgresBroker options), plugin (extra plugin options), otel, backlog, size (payload bytes), joined,
// ids, coalesce }. Kinds: see bench/README.md.

import { existsSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { Session } from 'node:inspector/promises'
import { pathToFileURL } from 'node:url'
import { cpuMs, failed, oursEntry, serve, sleep } from './harness.mjs'
import { frameHtml, renderHtml, splitLines } from './payload.mjs'

const opt = JSON.parse(process.argv[2])
const hrtime = process.hrtime.bigint
const listenOpts = { host: '127.0.0.1', port: 0, backlog: opt.backlog }
const fastify = async () => (await import('fastify')).default({ logger: false })

/**
 * raw / fastify-raw: one Buffer per publish to every response; a Last-Event-ID gets the frames after it from an array.
 * `ids`: every frame carries an id shaped like the memory broker's (`<epoch>-<n>`), which publish returns.
 * `coalesce`: the frames published in one event-loop turn are concatenated once and written once per response, on
 * the next tick (when Node uncorks the sockets it corked on the turn's first write).
 */
async function rawKind() {
  const clients = new Set()
  const frames = []
  const epoch = Date.now()
  let published = 0
  let turn = null
  const writeAll = (buf) => {
    for (const res of clients) res.write(buf)
  }
  const flushTurn = () => {
    const bufs = turn
    turn = null
    writeAll(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs))
  }
  const open = (req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    const from = Number(req.headers['last-event-id'])
    if (opt.joined && from >= 0) res.write(Buffer.concat(frames.slice(from)))
    else if (from >= 0) for (let i = from; i < frames.length; i++) res.write(frames[i])
    else res.flushHeaders()
    clients.add(res)
    res.on('close', () => clients.delete(res))
  }
  const srv = {
    count: () => clients.size,
    publish(html) {
      const id = opt.ids ? `${epoch}-${++published}` : frames.length > 0 ? String(frames.length + 1) : undefined
      const buf = Buffer.from(frameHtml(html, id))
      if (!opt.coalesce) writeAll(buf)
      else if (turn !== null) turn.push(buf)
      else {
        turn = [buf]
        process.nextTick(flushTurn)
      }
      return id
    },
    prefill(htmls) {
      for (const html of htmls) frames.push(Buffer.from(frameHtml(html, String(frames.length + 1))))
      return frames.map((_, i) => String(i + 1))
    }
  }
  if (opt.kind === 'raw') return { ...srv, server: http.createServer(open) }
  const app = await fastify()
  app.get('/events', (request, reply) => {
    reply.hijack()
    open(request.raw, reply.raw)
  })
  return { ...srv, app }
}

async function oursKind() {
  if (opt.otel) await registerOtel(opt.otel === 'loaded')
  const { default: htmlSse } = await import(pathToFileURL(oursEntry(opt.ours)).href)
  const plugin = { heartbeatMs: 0, replay: 0, ...opt.plugin }
  if (opt.broker === 'redis') {
    const { redisBroker } = await import(pathToFileURL(oursEntry(opt.ours, './redis')).href)
    plugin.broker = redisBroker({ url: opt.url, prefix: opt.prefix, ...opt.redis })
  }
  // Postgres: the broker on a pool of its own whose queries are counted (the `queries` rpc), closed after the app.
  let pg = null
  if (opt.broker === 'postgres') {
    const { postgresBroker } = await import(pathToFileURL(oursEntry(opt.ours, './postgres')).href)
    const { countingPool } = await import('./postgres.mjs')
    pg = await countingPool(opt.url)
    plugin.broker = postgresBroker({ pool: pg.pool, table: opt.table, ...opt.postgres })
  }
  const app = await fastify()
  await app.register(htmlSse, plugin)
  // A broker made here is closed here (close is idempotent, so builds whose plugin closed it too are fine).
  if (plugin.broker !== undefined) app.addHook('onClose', () => plugin.broker.close())
  app.get('/events', (_request, reply) => {
    reply.sse({ topics: ['bench'] })
  })
  return {
    app,
    count: () => app.sse.stats().connections,
    publish: (html) => app.sse.publish('bench', html),
    stats: () => app.sse.stats(),
    async prefill(htmls) {
      const ids = []
      for (const html of htmls) ids.push(await app.sse.publish('bench', html))
      return ids
    },
    queries: pg && (() => pg.counted.queries),
    async close() {
      await app.close()
      await pg?.pool.end()
    }
  }
}

let reader = null
let profiler = null
/** An OpenTelemetry SDK as an app would set it up: a MeterProvider with a reader, global before the plugin registers. */
async function registerOtel(loadedOnly) {
  const { metrics } = await import('@opentelemetry/api')
  const sdk = await import('@opentelemetry/sdk-metrics')
  const exporter = new sdk.InMemoryMetricExporter(sdk.AggregationTemporality.CUMULATIVE)
  reader = new sdk.PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 10_000 })
  const provider = new sdk.MeterProvider({ readers: [reader] })
  // `loadedOnly`: the SDK is in the process, but the plugin records into the API's no-op meter.
  if (!loadedOnly) metrics.setGlobalMeterProvider(provider)
}

async function otherKind(kind) {
  const app = await fastify()
  const set = new Set()
  const each = (fn) => (html) => {
    for (const reply of set) fn(reply, html)
  }
  if (kind === 'fastify-sse') {
    await app.register((await import('@fastify/sse')).default, { heartbeatInterval: 0 })
    app.get('/events', { sse: 'only' }, async (_request, reply) => {
      reply.sse.keepAlive()
      reply.sse.sendHeaders()
      reply.raw.flushHeaders() // the client sees the 200 before the first event
      set.add(reply)
      reply.sse.onClose(() => set.delete(reply))
    })
    return { app, count: () => set.size, publish: each((reply, html) => reply.sse.send(html).catch(() => {})) }
  }
  if (kind === 'better-sse') {
    const { createSession, createChannel } = await import('better-sse')
    const channel = createChannel()
    app.get('/events', async (request, reply) => {
      reply.hijack()
      channel.register(await createSession(request.raw, reply.raw, { keepAlive: null, serializer: splitLines }))
    })
    return { app, count: () => channel.sessionCount, publish: (html) => channel.broadcast(html, 'message') }
  }
  if (kind === 'fastify-sse-v2') {
    await app.register((await import('fastify-sse-v2')).FastifySSEPlugin, { retryDelay: false })
    app.get('/events', (request, reply) => {
      reply.sse({ comment: 'connected' }) // the only payload-free write; it sends the head
      set.add(reply)
      request.socket.on('close', () => {
        set.delete(reply)
        reply.sseContext?.source?.end()
      })
    })
    return { app, count: () => set.size, publish: each((reply, html) => reply.sse({ data: html })) }
  }
  throw new Error(`unknown kind ${kind}`)
}

try {
  if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc')
  const { kind } = opt
  const srv = kind === 'ours' ? await oursKind() : kind.endsWith('raw') ? await rawKind() : await otherKind(kind)
  if (srv.app) await srv.app.listen(listenOpts)
  else await new Promise((resolve) => srv.server.listen(listenOpts, resolve))
  const size = opt.size ?? 300
  serve(
    {
      count: () => srv.count(),
      cpu: cpuMs,
      stats: () => srv.stats?.() ?? null,
      /** Queries on the Postgres broker's pool so far (its LISTEN connection's reads are not counted). */
      queries: () => srv.queries?.() ?? null,
      async mem() {
        for (let i = 0; i < 4; i++) {
          globalThis.gc()
          await sleep(20)
        }
        const { heapUsed, rss } = process.memoryUsage()
        return { heapUsed, rss }
      },
      /**
       * k publishes, `perTurn` of them in one event-loop turn, then a yield to I/O: called back to back and awaited
       * together, or with `awaitEach` one after the other; `ids`: return the ids the publishes returned.
       */
      async burst({ k, seq0, perTurn = 1, ids = false, awaitEach = false }) {
        const t0 = hrtime()
        const out = ids ? [] : null
        const html = (j) => renderHtml(seq0 + j, hrtime(), size)
        for (let i = 0; i < k; i += perTurn) {
          const end = Math.min(k, i + perTurn)
          if (awaitEach) {
            for (let j = i; j < end; j++) {
              const id = await srv.publish(html(j))
              out?.push(id)
            }
          } else {
            const turn = []
            for (let j = i; j < end; j++) turn.push(srv.publish(html(j)))
            const got = await Promise.all(turn)
            out?.push(...got)
          }
          await new Promise((resolve) => setImmediate(resolve))
        }
        return { t0: Number(t0), ms: Number(hrtime() - t0) / 1e6, ids: out }
      },
      /** Start the V8 CPU profiler; with `file`, stop it and write the profile there. */
      async profile({ file }) {
        if (!file) {
          profiler = new Session()
          profiler.connect()
          await profiler.post('Profiler.enable')
          await profiler.post('Profiler.setSamplingInterval', { interval: 200 })
          await profiler.post('Profiler.start')
          return
        }
        const { profile } = await profiler.post('Profiler.stop')
        profiler.disconnect()
        writeFileSync(file, JSON.stringify(profile))
      },
      /** `count` publishes at `rate`/s on a drift-free schedule. */
      async paced({ rate, count, seq0 }) {
        const start = hrtime()
        for (let i = 0; i < count; i++) {
          const due = ((i + 1) * 1e9) / rate - Number(hrtime() - start)
          if (due > 0) await sleep(Math.ceil(due / 1e6))
          await srv.publish(renderHtml(seq0 + i, hrtime(), size))
        }
      },
      prefill: ({ n, seq0 }) => srv.prefill(Array.from({ length: n }, (_, i) => renderHtml(seq0 + i, hrtime(), size))),
      /** Block the event loop (a GC pause, a slow synchronous handler) for at least `ms` and until `file` exists, at most 60 s. */
      block({ ms, file }) {
        return new Promise((resolve) =>
          process.send({ type: 'blocking' }, () => {
            const [min, max] = [Date.now() + ms, Date.now() + 60_000]
            while (Date.now() < max && (Date.now() < min || !existsSync(file)));
            resolve()
          })
        )
      },
      async metrics() {
        const { resourceMetrics } = await reader.collect()
        const out = {}
        for (const sm of resourceMetrics.scopeMetrics)
          for (const m of sm.metrics) out[m.descriptor.name] = m.dataPoints.reduce((a, p) => a + (p.value ?? 0), 0)
        return out
      },
      async exit() {
        setImmediate(async () => {
          await Promise.race([srv.close?.(), sleep(3000)])
          process.exit(0)
        })
      }
    },
    { port: (srv.server ?? srv.app.server).address().port }
  )
} catch (err) {
  failed(err)
}
