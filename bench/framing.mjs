// Framing comparison: how each SSE library frames hostile or multi-line HTML.
//
//   npx tsc -p tsconfig.build.json          # ours is loaded from the build (dist/lib/index.js)
//   npm install --prefix /tmp/cmp hono @hono/node-server @starfederation/datastar-sdk
//   node bench/framing.mjs [--no-write] [--out FILE] [--cmp DIR]
//
// For every library (and every documented way of handing it a string), a real
// server listens on 127.0.0.1:0. For every case the script opens a raw TCP
// socket, sends `GET /c/<case>`, reads the whole response (the server ends
// the stream after the one message), de-chunks it, and feeds the body to
// eventsource-parser, a conforming parser. The events it dispatches are
// compared with what was sent: exact round trip / altered (how) / injected /
// refused (the library threw) / no event. The report goes to bench/FRAMING.md
// and stdout. Hono and the Datastar SDK are not dependencies of this project:
// they are imported from --cmp (default /tmp/cmp, or FRAMING_CMP_DIR) when
// installed there, and reported as skipped otherwise.
//
// Network: 127.0.0.1 only. Every request has a timeout; every server is closed
// at the end; the script exits by itself.

import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { createParser } from 'eventsource-parser'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
// ---------------------------------------------------------------- options

const argv = process.argv.slice(2)
const opt = { write: true, out: path.join(HERE, 'FRAMING.md'), cmp: process.env.FRAMING_CMP_DIR || '/tmp/cmp' }
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  if (a === '--no-write') opt.write = false
  else if (a === '--out') opt.out = path.resolve(argv[++i])
  else if (a === '--cmp') opt.cmp = path.resolve(argv[++i])
  else if (a === '--help' || a === '-h') {
    console.log('node bench/framing.mjs [--no-write] [--out FILE] [--cmp DIR]')
    process.exit(0)
  } else {
    console.error(`unknown option ${a}`)
    process.exit(2)
  }
}
const t0 = Date.now()

// ---------------------------------------------------------------- cases

function bigFragment() {
  // 2,000 lines of 49 characters + LF (no LF after the last): 99,999 bytes, every line indented.
  const lines = []
  for (let i = 0; i < 2000; i++) lines.push(`  <li data-i="${String(i).padStart(4, '0')}">${'x'.repeat(24)}</li>`)
  return lines.join('\n')
}

/**
 * Each case: the HTML (a string) and, for some, an event name and/or an id.
 * `want` is what a perfect library makes a conforming parser dispatch: one
 * event whose data is the HTML with CRLF and CR read as LF (an SSE parser
 * cannot return a CR inside data: every CR, LF and CRLF ends a line).
 */
const CASES = [
  { key: 'lf', label: 'multi-line, LF', html: '<ul>\n  <li>one</li>\n  <li>two</li>\n</ul>' },
  { key: 'crlf', label: 'multi-line, CRLF', html: '<ul>\r\n  <li>one</li>\r\n  <li>two</li>\r\n</ul>' },
  { key: 'cr', label: 'multi-line, lone CR', html: '<ul>\r  <li>one</li>\r  <li>two</li>\r</ul>' },
  { key: 'lead', label: 'leading spaces', html: '    <b>indented</b>' },
  { key: 'blank', label: 'empty line inside', html: '<p>one</p>\n\n<p>two</p>' },
  { key: 'trail', label: 'trailing line break', html: '<p>one</p>\n' },
  { key: 'empty', label: 'empty string', html: '' },
  { key: 'named', label: 'event `update` + id `7` (baseline)', html: '<p>ok</p>', event: 'update', id: '7' },
  {
    key: 'inj-data',
    label: 'data holds `\\n\\nevent: reset\\ndata: x`',
    html: '<p>hi</p>\n\nevent: reset\ndata: x',
    hostile: true
  },
  {
    key: 'frame-like',
    label: 'data is exactly `event: reset\\ndata: x\\n\\n`',
    html: 'event: reset\ndata: x\n\n',
    hostile: true
  },
  {
    key: 'inj-event',
    label: 'event name `update\\ndata: injected`',
    html: '<p>ok</p>',
    event: 'update\ndata: injected',
    hostile: true
  },
  { key: 'inj-id', label: 'id `42\\ndata: injected`', html: '<p>ok</p>', id: '42\ndata: injected', hostile: true },
  { key: 'big', label: '100 KB, 2,000 lines', html: bigFragment() }
]
const caseIndex = new Map(CASES.map((c, i) => [c.key, i]))
const BREAKS = /\r\n|\r|\n/g
const normalize = (s) => s.replace(BREAKS, '\n')

// ---------------------------------------------------------------- versions

function pkgVersion(name, base = ROOT) {
  try {
    const req = createRequire(path.join(base, 'package.json'))
    // some packages do not export ./package.json: walk up from the resolved entry
    let dir = path.dirname(req.resolve(name))
    for (let i = 0; i < 6; i++) {
      const p = path.join(dir, 'package.json')
      if (existsSync(p)) {
        const j = JSON.parse(readFileSync(p, 'utf8'))
        if (j.name === name) return j.version
      }
      dir = path.dirname(dir)
    }
  } catch {}
  try {
    return JSON.parse(readFileSync(path.join(base, 'node_modules', name, 'package.json'), 'utf8')).version
  } catch {}
  return null
}

function oursDescription() {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
  let git = ''
  try {
    git = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', 'lib'], { cwd: ROOT, encoding: 'utf8' }).trim()
    if (dirty) git += ' + uncommitted changes in lib/'
  } catch {}
  let built = ''
  try {
    built = statSync(path.join(ROOT, 'dist/lib/frame.js')).mtime.toISOString()
  } catch {}
  return `${pkg.name} ${pkg.version} (dist/lib built ${built || '?'}, git ${git || '?'})`
}

// ---------------------------------------------------------------- raw HTTP client

/**
 * GET `p` on 127.0.0.1:port over a raw socket; resolves when the response is
 * complete (last chunk, or the server closed), or after timeoutMs.
 */
function rawGet(port, p, timeoutMs = 5000) {
  return new Promise((resolve) => {
    const chunks = []
    let done = false
    const socket = net.connect({ host: '127.0.0.1', port })
    const finish = (how) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ how, ...decodeResponse(Buffer.concat(chunks)) })
    }
    const timer = setTimeout(() => finish('timeout'), timeoutMs)
    socket.on('connect', () => {
      socket.write(
        `GET ${p} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n`
      )
    })
    socket.on('data', (d) => {
      chunks.push(d)
      if (decodeResponse(Buffer.concat(chunks)).complete) finish('complete')
    })
    socket.on('error', () => finish('error'))
    socket.on('close', () => finish('closed'))
  })
}

/** Splits status line, headers and body; de-chunks a chunked body. */
function decodeResponse(buf) {
  const end = buf.indexOf('\r\n\r\n')
  if (end < 0) return { complete: false, status: null, headers: {}, body: Buffer.alloc(0) }
  const head = buf.subarray(0, end).toString('latin1').split('\r\n')
  const status = Number(head[0].split(' ')[1])
  const headers = {}
  for (const line of head.slice(1)) {
    const i = line.indexOf(':')
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
  }
  let rest = buf.subarray(end + 4)
  if (!/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const len = headers['content-length'] === undefined ? null : Number(headers['content-length'])
    return { complete: len !== null && rest.length >= len, status, headers, body: rest }
  }
  const parts = []
  for (;;) {
    const lineEnd = rest.indexOf('\r\n')
    if (lineEnd < 0) return { complete: false, status, headers, body: Buffer.concat(parts) }
    const size = Number.parseInt(rest.subarray(0, lineEnd).toString('latin1').split(';')[0], 16)
    if (size === 0) return { complete: true, status, headers, body: Buffer.concat(parts) }
    if (rest.length < lineEnd + 2 + size + 2) return { complete: false, status, headers, body: Buffer.concat(parts) }
    parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size))
    rest = rest.subarray(lineEnd + 2 + size + 2)
  }
}

/** What a conforming parser makes of the body. */
function parseBody(body) {
  const events = []
  const errors = []
  let retries = 0
  let comments = 0
  const parser = createParser({
    onEvent: (ev) => events.push({ type: ev.event ?? 'message', id: ev.id, data: ev.data }),
    onError: (err) => errors.push(err.message),
    onRetry: () => retries++,
    onComment: () => comments++
  })
  parser.feed(new TextDecoder('utf-8').decode(body))
  return { events, errors, retries, comments }
}

// ---------------------------------------------------------------- errors seen by the servers

/** Errors a library threw (or logged) while handling the current request. */
let serverErrors = []
const record = (err) => serverErrors.push(err)
const errText = (err) => {
  if (err == null) return 'unknown error'
  const name = err.name ?? 'Error'
  const code = err.code ? ` ${err.code}` : ''
  const msg = String(err.message ?? err).split('\n')[0]
  return `${name}${code}: ${msg.length > 90 ? `${msg.slice(0, 90)}…` : msg}`
}

/** A Fastify logger that keeps warn/error records (the sink logs a source that threw). */
function captureLogger() {
  return {
    level: 'warn',
    stream: {
      write(line) {
        try {
          const rec = JSON.parse(line)
          if (rec.err) record({ name: rec.err.type, code: rec.err.code, message: rec.err.message, logged: rec.msg })
        } catch {}
      }
    }
  }
}

const caseOf = (request) => CASES[Number(request.params.i)]
const optsId = (c) => (c.id === undefined ? undefined : { id: c.id })

async function listenFastify(app) {
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { port: app.server.address().port, close: () => app.close() }
}

// ---------------------------------------------------------------- libraries

const libs = []
const skipped = []
const versions = {}

async function loadOurs() {
  const entry = path.join(ROOT, 'dist/lib/index.js')
  if (!existsSync(entry)) throw new Error('dist/lib/index.js is missing: run `npx tsc -p tsconfig.build.json` first')
  return import(pathToFileURL(entry).href)
}

function addOurs(ours, Fastify) {
  const { default: htmlSse, sseMessage } = ours
  const make = async (route) => {
    const app = Fastify({ logger: captureLogger() })
    await app.register(htmlSse, { heartbeatMs: 0 })
    app.get('/c/:i', route(app))
    return listenFastify(app)
  }
  libs.push({
    id: 'ours-frame',
    lib: 'ours',
    api: '`reply.sse([sseMessage(html, event, { id })])`',
    start: () =>
      make(() => (request, reply) => {
        const c = caseOf(request)
        let frame
        try {
          frame = sseMessage(c.html, c.event ?? 'message', optsId(c))
        } catch (err) {
          record(err)
          reply.sse([])
          return
        }
        reply.sse([frame])
      })
  })
  libs.push({
    id: 'ours-send',
    lib: 'ours',
    api: '`await reply.sse().send(html, event, { id })`',
    start: () =>
      make(() => async (request, reply) => {
        const c = caseOf(request)
        const sink = reply.sse()
        try {
          await sink.send(c.html, c.event ?? 'message', optsId(c))
        } catch (err) {
          record(err)
        }
        sink.close()
      })
  })
  libs.push({
    id: 'ours-object',
    lib: 'ours',
    api: '`reply.sse([{ html, event, id }])`',
    start: () =>
      make(() => (request, reply) => {
        const c = caseOf(request)
        const item = { html: c.html }
        if (c.event !== undefined) item.event = c.event
        if (c.id !== undefined) item.id = c.id
        reply.sse([item])
      })
  })
  libs.push({
    id: 'ours-string',
    lib: 'ours',
    api: '`reply.sse([html])` (a plain string item)',
    na: (c) => (c.event !== undefined || c.id !== undefined ? 'n/a: a string item carries no event or id' : null),
    start: () =>
      make(() => (request, reply) => {
        reply.sse([caseOf(request).html])
      })
  })
  libs.push({
    id: 'ours-publish',
    lib: 'ours',
    api: '`app.sse.publish(topic, html, event)` to a `reply.sse({ topics })` stream',
    ignoreId: true,
    na: (c) =>
      c.id !== undefined && c.event === undefined
        ? 'n/a: publish assigns the id itself (passing one throws FST_ERR_HTML_SSE_PUBLISH_ID)'
        : null,
    start: () =>
      make((app) => (request, reply) => {
        const c = caseOf(request)
        const topic = `t${request.params.i}`
        const sink = reply.sse({ topics: [topic] })
        setImmediate(async () => {
          try {
            await app.sse.publish(topic, c.html, c.event ?? 'message')
          } catch (err) {
            record(err)
          }
          sink.close()
        })
      })
  })
}

function addFastifySse(fastifySse, Fastify) {
  const make = async (routeOpts, handler) => {
    const app = Fastify({ logger: captureLogger() })
    await app.register(fastifySse, { heartbeatInterval: 0 })
    app.get('/c/:i', routeOpts, handler)
    return listenFastify(app)
  }
  libs.push({
    id: 'fastify-sse-string',
    lib: '@fastify/sse',
    api: '`reply.sse.send(html)` (string form)',
    na: (c) => (c.event !== undefined || c.id !== undefined ? 'n/a: the string form carries no event or id' : null),
    start: () =>
      make({ sse: 'only' }, async (request, reply) => {
        try {
          await reply.sse.send(caseOf(request).html)
        } catch (err) {
          record(err)
        }
      })
  })
  libs.push({
    id: 'fastify-sse-object',
    lib: '@fastify/sse',
    api: '`reply.sse.send({ data: html, event, id })` (default serializer)',
    start: () =>
      make({ sse: 'only' }, async (request, reply) => {
        const c = caseOf(request)
        try {
          await reply.sse.send({ data: c.html, event: c.event, id: c.id })
        } catch (err) {
          record(err)
        }
      })
  })
  libs.push({
    id: 'fastify-sse-raw',
    lib: '@fastify/sse',
    api: '`reply.sse.send({ data: html, event, id })` with route option `serializer: String`',
    start: () =>
      make({ sse: { kind: 'only', serializer: String } }, async (request, reply) => {
        const c = caseOf(request)
        try {
          await reply.sse.send({ data: c.html, event: c.event, id: c.id })
        } catch (err) {
          record(err)
        }
      })
  })
}

function addFastifySseV2(FastifySSEPlugin, Fastify) {
  libs.push({
    id: 'fastify-sse-v2',
    lib: 'fastify-sse-v2',
    api: '`reply.sse({ data: html, event, id })`',
    start: async () => {
      const app = Fastify({ logger: captureLogger() })
      await app.register(FastifySSEPlugin)
      app.get('/c/:i', (request, reply) => {
        const c = caseOf(request)
        try {
          const message = { data: c.html }
          if (c.event !== undefined) message.event = c.event
          if (c.id !== undefined) message.id = c.id
          reply.sse(message)
        } catch (err) {
          record(err)
        }
        // "the connection is kept open until you call reply.sseContext.source.end()"
        if (reply.sseContext?.source) reply.sseContext.source.end()
        else reply.send('')
      })
      return listenFastify(app)
    }
  })
}

function addBetterSse(betterSse, Fastify) {
  const { createSession } = betterSse
  const make = (sessionOpts) => async () => {
    const app = Fastify({ logger: captureLogger() })
    app.get('/c/:i', async (request, reply) => {
      const c = caseOf(request)
      reply.hijack()
      try {
        const session = await createSession(request.raw, reply.raw, { keepAlive: null, ...sessionOpts })
        if (c.event === undefined && c.id === undefined) session.push(c.html)
        else session.push(c.html, c.event ?? 'message', c.id)
      } catch (err) {
        record(err)
      }
      reply.raw.end()
    })
    return listenFastify(app)
  }
  libs.push({
    id: 'better-sse-default',
    lib: 'better-sse',
    api: '`session.push(html, event, id)` (default serializer)',
    start: make({})
  })
  libs.push({
    id: 'better-sse-string',
    lib: 'better-sse',
    api: '`session.push(html, event, id)` with `serializer: String`',
    start: make({ serializer: String })
  })
  libs.push({
    id: 'better-sse-bench',
    lib: 'better-sse',
    api: "`session.push(...)` with bench/server.mjs's line-splitting serializer",
    start: make({ serializer: (html) => ` ${String(html).replaceAll('\n', '\ndata: ')}` })
  })
}

function addHono(hono, streaming, nodeServer) {
  const { Hono } = hono
  const { streamSSE } = streaming
  const { serve } = nodeServer
  libs.push({
    id: 'hono',
    lib: 'hono',
    api: '`streamSSE(c, (s) => s.writeSSE({ data: html, event, id }))`',
    start: () =>
      new Promise((resolve, reject) => {
        const app = new Hono()
        app.get('/c/:i', (ctx) => {
          const c = CASES[Number(ctx.req.param('i'))]
          return streamSSE(ctx, async (stream) => {
            try {
              const message = { data: c.html }
              if (c.event !== undefined) message.event = c.event
              if (c.id !== undefined) message.id = c.id
              await stream.writeSSE(message)
            } catch (err) {
              record(err)
            }
          })
        })
        const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' })
        server.once('error', reject)
        server.once('listening', () =>
          resolve({
            port: server.address().port,
            close: () =>
              new Promise((r) => {
                server.closeAllConnections?.()
                server.close(() => r())
              })
          })
        )
      })
  })
}

function addDatastar(sdk, Fastify) {
  const { ServerSentEventGenerator } = sdk
  libs.push({
    id: 'datastar',
    lib: '@starfederation/datastar-sdk',
    api: '`ServerSentEventGenerator.stream(req, res, (s) => s.patchElements(html, { eventId }))`',
    datastar: true,
    expectType: 'datastar-patch-elements',
    na: (c) => (c.event !== undefined && c.id === undefined ? 'n/a: patchElements has no event name option' : null),
    start: async () => {
      const app = Fastify({ logger: captureLogger() })
      app.get('/c/:i', async (request, reply) => {
        const c = caseOf(request)
        reply.hijack()
        try {
          await ServerSentEventGenerator.stream(request.raw, reply.raw, (stream) => {
            try {
              stream.patchElements(c.html, c.id === undefined ? undefined : { eventId: c.id })
            } catch (err) {
              record(err)
            }
          })
        } catch (err) {
          record(err)
          if (!reply.raw.writableEnded) reply.raw.end()
        }
      })
      return listenFastify(app)
    }
  })
}

async function loadAll() {
  const { default: Fastify } = await import('fastify')
  versions.fastify = pkgVersion('fastify')
  versions['eventsource-parser'] = pkgVersion('eventsource-parser')
  try {
    addOurs(await loadOurs(), Fastify)
    versions.ours = oursDescription()
  } catch (err) {
    skipped.push(`ours: ${err.message}`)
  }
  try {
    const m = await import('@fastify/sse')
    addFastifySse(m.default ?? m, Fastify)
    versions['@fastify/sse'] = pkgVersion('@fastify/sse')
  } catch (err) {
    skipped.push(`@fastify/sse: ${err.message}`)
  }
  try {
    const m = await import('fastify-sse-v2')
    addFastifySseV2(m.FastifySSEPlugin, Fastify)
    versions['fastify-sse-v2'] = pkgVersion('fastify-sse-v2')
  } catch (err) {
    skipped.push(`fastify-sse-v2: ${err.message}`)
  }
  try {
    addBetterSse(await import('better-sse'), Fastify)
    versions['better-sse'] = pkgVersion('better-sse')
  } catch (err) {
    skipped.push(`better-sse: ${err.message}`)
  }
  // Not dependencies of the project: loaded from the --cmp directory (CommonJS entries, one module graph).
  const cmpRequire = createRequire(path.join(opt.cmp, 'package.json'))
  try {
    addHono(cmpRequire('hono'), cmpRequire('hono/streaming'), cmpRequire('@hono/node-server'))
    versions.hono = pkgVersion('hono', opt.cmp)
    versions['@hono/node-server'] = pkgVersion('@hono/node-server', opt.cmp)
  } catch (err) {
    skipped.push(
      `hono: not loaded from ${opt.cmp} (${err.code ?? err.message}); install: npm install --prefix ${opt.cmp} hono @hono/node-server`
    )
  }
  try {
    addDatastar(cmpRequire('@starfederation/datastar-sdk'), Fastify)
    versions['@starfederation/datastar-sdk'] = pkgVersion('@starfederation/datastar-sdk', opt.cmp)
  } catch (err) {
    skipped.push(
      `@starfederation/datastar-sdk: not loaded from ${opt.cmp} (${err.code ?? err.message}); install: npm install --prefix ${opt.cmp} @starfederation/datastar-sdk`
    )
  }
}

// ---------------------------------------------------------------- classification

/** Datastar's client reads `elements <html line>` data lines back into the HTML. */
function datastarElements(data) {
  const out = []
  for (const line of data.split('\n')) if (line.startsWith('elements ')) out.push(line.slice(9))
  return out.join('\n')
}

const q = (s, n = 40) => {
  const j = JSON.stringify(s)
  return j.length > n ? `${j.slice(0, n)}…"` : j
}

/** How `got` differs from `want` (both already LF-only), in a few words. */
function dataDiff(want, got, original) {
  if (got === JSON.stringify(want) || got === JSON.stringify(original))
    return 'JSON-encoded: data is `JSON.stringify(html)`'
  if (want.endsWith('\n') && got === want.replace(/\n+$/, '')) return 'trailing line break dropped'
  const w = want.split('\n')
  const g = got.split('\n')
  if (g.length === w.length) {
    const lost = w.filter((line, i) => g[i] !== line && line.startsWith(' ') && g[i] === line.slice(1)).length
    if (lost > 0 && w.every((line, i) => g[i] === line || (line.startsWith(' ') && g[i] === line.slice(1))))
      return `one leading space lost on ${lost} of ${w.length} line(s)`
  }
  if (g.length < w.length) {
    let i = 0
    while (i < g.length && g[i] === w[i]) i++
    return `${w.length - g.length} of ${w.length} lines lost (data = ${q(got, 48)})`
  }
  let i = 0
  while (i < want.length && want[i] === got[i]) i++
  return `differs from char ${i}: got ${q(got.slice(i), 36)}, want ${q(want.slice(i), 36)}`
}

/**
 * One cell of the table: { verdict, text } where verdict is one of
 * exact, normalized, altered, injected, refused, none, n/a, skipped.
 */
function classify(lib, c, r) {
  const want = { type: c.event ?? 'message', id: c.id, data: normalize(c.html) }
  const errs = r.errors.map(errText)
  const events = r.parsed.events
  const extra = []
  if (r.how === 'timeout') extra.push('response did not end within 5 s')
  if (r.status !== 200) extra.push(`HTTP ${r.status}`)
  if (errs.length > 0) {
    const logged = r.errors.some((e) => e.logged)
    const base = `${logged ? 'logged' : 'threw'} ${errs[0]}`
    if (events.length === 0) return { verdict: 'refused', text: `refused: ${base}`, extra }
    extra.push(base)
  }
  if (events.length === 0) return { verdict: 'none', text: 'no event dispatched', extra }
  if (events.length > 1) {
    const list = events.map((e) => `${e.type} ${q(e.data, 24)}`).join(', ')
    return { verdict: 'injected', text: `INJECTED: ${events.length} events (${list})`, extra }
  }
  const ev = events[0]
  const wantType = lib.expectType ?? want.type
  const data = lib.datastar ? datastarElements(ev.data) : ev.data
  const problems = []
  let injected = false
  const fromField = (c.event ?? '').includes('injected') || (c.id ?? '').includes('injected')
  if (fromField && ev.data.includes('injected')) {
    injected = true
    const where = (c.event ?? '').includes('injected') ? 'event name' : 'id'
    problems.push(`\`data: injected\` from the ${where} became a data line (data = ${q(ev.data, 40)})`)
  }
  if (ev.type !== wantType) {
    if (c.hostile && !(c.event ?? '').startsWith(ev.type)) {
      injected = true
      problems.push(`event type became ${q(ev.type)}`)
    } else {
      problems.push(`event type ${q(ev.type)} instead of ${q(wantType)}`)
    }
  }
  const checkId = c.id !== undefined && !lib.ignoreId
  if (checkId && ev.id !== want.id)
    problems.push(`id ${ev.id === undefined ? 'missing' : q(ev.id)} instead of ${q(want.id)}`)
  if (!injected && data !== want.data) problems.push(dataDiff(want.data, data, c.html))
  if (problems.length === 0) {
    const norm = c.html !== want.data
    return { verdict: norm ? 'normalized' : 'exact', text: norm ? 'exact (CRLF/CR → LF)' : 'exact', extra }
  }
  return {
    verdict: injected ? 'injected' : 'altered',
    text: `${injected ? 'INJECTED' : 'altered'}: ${problems.join('; ')}`,
    extra
  }
}

// ---------------------------------------------------------------- run

const results = new Map() // lib.id -> case.key -> { cell, raw }

async function runLib(lib) {
  const row = new Map()
  results.set(lib.id, row)
  let server
  try {
    server = await lib.start()
  } catch (err) {
    for (const c of CASES)
      row.set(c.key, { cell: { verdict: 'skipped', text: `server failed: ${errText(err)}`, extra: [] } })
    return
  }
  try {
    for (const c of CASES) {
      const na = lib.na?.(c)
      if (na) {
        row.set(c.key, { cell: { verdict: 'n/a', text: na, extra: [] } })
        continue
      }
      serverErrors = []
      const r = await rawGet(server.port, `/c/${caseIndex.get(c.key)}`)
      await new Promise((resolve) => setTimeout(resolve, 20)) // let late log lines arrive
      r.errors = serverErrors
      serverErrors = []
      r.parsed = parseBody(r.body)
      const cell = classify(lib, c, r)
      row.set(c.key, { cell, raw: r.body.toString('utf8'), parserErrors: r.parsed.errors })
    }
  } finally {
    await Promise.race([server.close(), new Promise((resolve) => setTimeout(resolve, 3000))])
  }
}

/** The short form of a cell for the table. */
function tag(cell) {
  const t = cell.text
  switch (cell.verdict) {
    case 'exact':
    case 'normalized':
      return '✅'
    case 'refused':
      return '🛑 error'
    case 'none':
      return '⚠️ no event'
    case 'injected': {
      const m = /(\d+) events/.exec(t)
      if (m) return `❌ ${m[1]} events`
      return t.includes('event type became') ? '❌ event type' : '❌ field'
    }
    case 'altered':
      if (t.includes('JSON-encoded')) return '⚠️ JSON'
      if (t.includes('lines lost')) return '⚠️ lines lost'
      if (t.includes('leading space')) return '⚠️ space lost'
      if (t.includes('trailing line break')) return '⚠️ LF dropped'
      return '⚠️ altered'
    default:
      return '—'
  }
}

function render() {
  const L = []
  const took = ((Date.now() - t0) / 1000).toFixed(1)
  L.push('# SSE framing of HTML: ours vs other libraries')
  L.push('')
  L.push(`- date: ${new Date().toISOString()}`)
  L.push(
    `- command: \`node bench/framing.mjs\` (took ${took} s), after \`npx tsc -p tsconfig.build.json\` and \`npm install --prefix ${opt.cmp} hono @hono/node-server @starfederation/datastar-sdk\` (those three are not dependencies of the project; they are imported from \`${opt.cmp}\`)`
  )
  L.push(`- node ${process.version}; judged by eventsource-parser ${versions['eventsource-parser']}`)
  L.push(
    `- versions: ${Object.entries(versions)
      .filter(([k]) => k !== 'eventsource-parser')
      .map(([k, v]) => `${k} ${v}`)
      .join('; ')}`
  )
  if (skipped.length) for (const s of skipped) L.push(`- skipped: ${s}`)
  L.push('')
  L.push('## Method')
  L.push('')
  L.push(
    'For each library a real server listens on 127.0.0.1:0 (Fastify 5 for the Fastify plugins, better-sse and the Datastar SDK; `@hono/node-server` for Hono). ' +
      'For each case a raw TCP socket sends `GET /c/<case>` (`Accept: text/event-stream`); the handler hands the case to the library through its public API ' +
      '(the column *API*), then ends the stream; the client reads the whole response, de-chunks it and feeds the body to `eventsource-parser` (a conforming ' +
      'WHATWG parser). The events it dispatches are compared with what was sent. Errors a library throws (or, for ours, logs when a source item is refused) are caught in the server.'
  )
  L.push('')
  L.push(
    '*Expected* for every case: exactly one event whose type is the given event (`message` when none), whose id is the given id, and whose data is the HTML. ' +
      'An SSE parser cannot return a CR inside data (every CR, LF and CRLF ends a line), so for the CRLF and lone-CR cases the best possible result is the HTML with each line break read as LF: that is counted as a round trip (`exact (CRLF/CR → LF)`).'
  )
  L.push('')
  L.push(
    'Legend: ✅ exact round trip · ⚠️ altered or no event · ❌ injected (input became SSE fields or extra events) · 🛑 refused with an error · — not applicable'
  )
  L.push('')
  L.push('Cases (the column keys of the table):')
  L.push('')
  L.push('| key | case | input |')
  L.push('|---|---|---|')
  for (const c of CASES) {
    const parts = [
      c.key === 'big'
        ? `${Buffer.byteLength(c.html).toLocaleString('en-US')} bytes, ${c.html.split('\n').length.toLocaleString('en-US')} lines, each indented by 2 spaces`
        : `html \`${JSON.stringify(c.html).slice(1, -1)}\``
    ]
    if (c.event !== undefined) parts.push(`event \`${JSON.stringify(c.event).slice(1, -1)}\``)
    if (c.id !== undefined) parts.push(`id \`${JSON.stringify(c.id).slice(1, -1)}\``)
    L.push(`| ${c.key} | ${c.label.replaceAll('|', '\\|')} | ${parts.join(', ')} |`)
  }
  L.push('')
  L.push('## Results')
  L.push('')
  const cols = CASES
  L.push(`| library | API | ${cols.map((c) => c.key).join(' | ')} |`)
  L.push(`|---|---|${cols.map(() => ':---:').join('|')}|`)
  for (const lib of libs) {
    const row = results.get(lib.id)
    const cells = cols.map((c) => {
      const r = row?.get(c.key)
      return r ? tag(r.cell) : '?'
    })
    L.push(`| ${lib.lib} | ${lib.api} | ${cells.join(' | ')} |`)
  }
  L.push('')
  L.push('## Details (every cell that is not an exact round trip)')
  L.push('')
  for (const lib of libs) {
    const row = results.get(lib.id)
    const lines = []
    for (const c of cols) {
      const r = row?.get(c.key)
      if (!r || r.cell.verdict === 'exact' || r.cell.verdict === 'normalized' || r.cell.verdict === 'n/a') continue
      const extra = r.cell.extra.filter(Boolean)
      let wire = ''
      if (r.raw !== undefined && c.key !== 'big') {
        // better-sse writes a random UUID as the id of every event: shown as <uuid> so the report is stable
        const raw = r.raw.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '<uuid>')
        wire = ` — wire: \`${JSON.stringify(raw.slice(0, 160)).slice(1, -1).replaceAll('`', "'")}\``
      }
      lines.push(`  - **${c.label}**: ${r.cell.text}${extra.length ? ` (${extra.join('; ')})` : ''}${wire}`)
    }
    const na = cols.filter((c) => row?.get(c.key)?.cell.verdict === 'n/a').map((c) => row.get(c.key).cell.text)
    if (lines.length === 0 && na.length === 0) {
      L.push(`- **${lib.lib}**, ${lib.api}: every case is an exact round trip.`)
    } else {
      L.push(
        `- **${lib.lib}**, ${lib.api}:${lines.length === 0 ? ' every applicable case is an exact round trip.' : ''}`
      )
      L.push(...lines)
      for (const t of new Set(na)) L.push(`  - ${t}`)
    }
  }
  L.push('')
  return L.join('\n')
}

async function main() {
  await loadAll()
  for (const lib of libs) await runLib(lib)
  const report = render() + NOTES
  console.log(report)
  if (opt.write) {
    writeFileSync(opt.out, report)
    console.error(`written to ${path.relative(process.cwd(), opt.out)}`)
  }
}

// Hand-written notes: what the libraries document (quoted from their READMEs /
// typings) and where in their code the observed behaviour comes from. Checked
// against the versions in the header; the table above is what this run saw.
const NOTES = `## Notes per library

- **ours** (\`sseMessage\`, \`sink.send\`, \`{ html, event, id }\` items, \`app.sse.publish\`): every line break (CRLF, CR, LF) starts a new \`data:\` line, so
  every data case round-trips; an event name or id holding CR/LF is refused with a \`TypeError\` carrying a code
  (\`FST_ERR_HTML_SSE_EVENT_NEWLINE\`, \`FST_ERR_HTML_SSE_ID_INVALID\`). From a source (\`reply.sse([{ html, event, id }])\`)
  the refusal is not thrown to the caller: the sink logs it and ends the stream (the client sees no event).
  \`publish\` takes no id: ids come from the broker.
- **ours, plain string items**: a string item of a source that is itself a complete frame of the shape \`sseMessage\` makes
  is passed through as a frame, not framed as HTML (lib/sink.ts: \`isFrame(item) ? item : sseMessage(item)\`; API.md:
  "Each item is a frame string (from \`sseMessage\`), an HTML \`JSX.Element\` or string"). So text that happens to be
  \`event: reset\\ndata: x\\n\\n\` is sent as a \`reset\` event. It still dispatches one event only, but untrusted text
  yielded as a bare string can choose its event type (or \`id:\`). Yielding \`{ html }\` or \`sseMessage(html)\` avoids it.
- **@fastify/sse**: README: plugin option \`serializer\` "(default: JSON.stringify)"; "Plain string" form
  \`reply.sse.send('plain text message')\`. A string is framed with \`message.split('\\n')\`, one \`data:\` line each, so a lone CR
  survives into the wire and the parser ends the line there (the rest of the line is read as an unknown field and dropped).
  In the object form \`data\` goes through the serializer (JSON by default, so HTML arrives as a JSON string literal; with
  \`serializer: String\` it is split like a string); \`id\` and \`event\` are written as \`id: \${message.id}\`, \`event: \${message.event}\`
  without a check, so a line break in them writes extra fields.
- **fastify-sse-v2**: no serializer; \`data\` must be a string (README examples use \`JSON.stringify(data)\` for objects). It splits
  on \`\\n\` only (lone CR as above), skips \`data\` when it is falsy (\`if (chunk.data)\`), so an empty string sends no event,
  and writes \`id\`/\`event\` unchecked. It also sends \`retry: 3000\` first unless \`retryDelay: false\`.
- **better-sse**: typings: \`serializer\` "Defaults to \`JSON.stringify\`"; \`sanitizer\`: "Sanitize values so as to not prematurely
  dispatch events when writing fields whose text inadvertently contains newlines. By default, CR, LF and CRLF characters are
  replaced with a single LF character (\`\\n\`) and then any trailing LF characters are stripped". It writes \`data:\` + the
  serialized value as one field: with the JSON default the data is a JSON string (safe, but not HTML); with a plain
  \`String\` serializer every line after the first is no longer a \`data:\` line, the first line loses one leading space
  (\`data:\` has no space after the colon), and an empty line inside the HTML still ends the event, so the rest of the HTML
  is parsed as fields (2 events in *inj-data*) — the sanitizer strips only *trailing* line breaks. Event names and ids
  keep their inner line breaks. \`push\` always writes an \`id:\` (a random UUID when none is given) and the session
  sends \`retry:2000\` on connect. The fan-out benchmark's serializer (bench/server.mjs) fixes LF and CRLF but not a lone CR
  (the sanitizer turns it into LF after the serializer ran).
- **Hono** \`streamSSE\` / \`writeSSE\`: splits \`data\` on \`/\\r\\n|\\r|\\n/\` and throws \`Error: <key> must not contain "\\r" or "\\n"\` for
  \`event\` and \`id\` (hono/dist/helper/streaming/sse.js), so it matches ours on every case. The refusal is a plain \`Error\` without a code; thrown inside the
  \`streamSSE\` callback and not caught there, it goes to \`streamSSE\`'s \`onError\` (which is then followed by an
  \`event: error\` frame carrying the message) or to \`console.error\`, and the stream is closed.
- **Datastar SDK** (\`@starfederation/datastar-sdk\`, the TypeScript SDK; \`/node\` entry): it speaks Datastar's protocol, not
  plain SSE-with-HTML: the event type is always \`datastar-patch-elements\` and each HTML line is sent as
  \`data: elements <line>\`. Cells for it are judged by that rule (the data lines that start with \`elements \`, prefix removed,
  joined with LF, must equal the HTML), with eventsource-parser, not with Datastar's browser client, which was not run here.
  It splits on \`\\n\` only (\`data.split("\\n")\` in \`eachNewlineIsADataLine\`; lone CR as above), refuses an empty
  \`elements\` by design ("elements is required and cannot be empty"), has no event-name option, and writes \`eventId\`
  unchecked (\`id: \${eventId}\`).
- **eventsource-parser** is the judge: it follows the WHATWG rules (CR, LF and CRLF end a line; one optional space after the colon
  is removed; an event is dispatched at a blank line only when it had a \`data\` line; an incomplete event at the end of the
  stream is dropped).
`

const watchdog = setTimeout(() => {
  console.error('framing.mjs: still running after 120 s; giving up')
  process.exit(1)
}, 120_000)
watchdog.unref()

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err)
    process.exit(1)
  }
)
