#!/usr/bin/env node
// Framing: how each SSE library frames multi-line and hostile HTML, judged by eventsource-parser. See bench/README.md.
//
//   node bench/framing.mjs

import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import fastifySse from '@fastify/sse'
import { serve } from '@hono/node-server'
import { ServerSentEventGenerator } from '@starfederation/datastar-sdk'
import { createSession } from 'better-sse'
import { createParser } from 'eventsource-parser'
import Fastify from 'fastify'
import { FastifySSEPlugin } from 'fastify-sse-v2'
import { Hono } from 'hono'
import { streamSSE } from 'hono/streaming'
import { oursEntry, ROOT, sleep } from './harness.mjs'
import { splitLines } from './payload.mjs'
import { save, scenario } from './stats.mjs'

const { ours: build } = await scenario('framing')
const ours = await import(pathToFileURL(oursEntry(build.dir)).href)
const li = (i) => `  <li data-i="${String(i).padStart(4, '0')}">${'x'.repeat(24)}</li>`
const H = { hostile: true }
/**
 * [key, label, html, { event, id, hostile }]. A perfect library makes the parser dispatch one event: that event,
 * that id, the HTML with CRLF/CR read as LF.
 */
const CASES = [
  ['lf', 'multi-line, LF', '<ul>\n  <li>one</li>\n  <li>two</li>\n</ul>'],
  ['crlf', 'multi-line, CRLF', '<ul>\r\n  <li>one</li>\r\n  <li>two</li>\r\n</ul>'],
  ['cr', 'multi-line, lone CR', '<ul>\r  <li>one</li>\r  <li>two</li>\r</ul>'],
  ['lead', 'leading spaces', '    <b>indented</b>'],
  ['blank', 'empty line inside', '<p>one</p>\n\n<p>two</p>'],
  ['trail', 'trailing line break', '<p>one</p>\n'],
  ['empty', 'empty string', ''],
  ['named', 'event `update` + id `7` (baseline)', '<p>ok</p>', { event: 'update', id: '7' }],
  ['inj-data', 'data holds `\\n\\nevent: reset\\ndata: x`', '<p>hi</p>\n\nevent: reset\ndata: x', H],
  ['frame-like', 'data is exactly `event: reset\\ndata: x\\n\\n`', 'event: reset\ndata: x\n\n', H],
  ['inj-event', 'event name `update\\ndata: injected`', '<p>ok</p>', { event: 'update\ndata: injected', ...H }],
  ['inj-id', 'id `42\\ndata: injected`', '<p>ok</p>', { id: '42\ndata: injected', ...H }],
  ['big', '100 KB, 2,000 lines, each indented', Array.from({ length: 2000 }, (_, i) => li(i)).join('\n')]
].map(([key, label, html, more]) => ({ key, label, html, ...more }))

/** GET `p` over a raw socket; the de-chunked body once the response is complete, the server closed, or 5 s passed. */
function rawGet(port, p) {
  return new Promise((resolve) => {
    const chunks = []
    const socket = net.connect({ host: '127.0.0.1', port })
    const finish = (how) => {
      clearTimeout(timer)
      socket.destroy()
      resolve({ how, ...decode(Buffer.concat(chunks)) })
    }
    const timer = setTimeout(() => finish('timeout'), 5000)
    socket.on('connect', () =>
      socket.write(`GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n`)
    )
    socket.on('data', (d) => chunks.push(d) && decode(Buffer.concat(chunks)).complete && finish('complete'))
    socket.on('error', () => finish('error'))
    socket.on('close', () => finish('closed'))
  })
}

function decode(buf) {
  const end = buf.indexOf('\r\n\r\n')
  if (end < 0) return { complete: false, status: null, body: Buffer.alloc(0) }
  const head = buf.subarray(0, end).toString('latin1')
  const status = Number(head.slice(9, 12))
  let rest = buf.subarray(end + 4)
  if (!/\r\ntransfer-encoding: *chunked/i.test(head)) return { complete: false, status, body: rest }
  const parts = []
  for (;;) {
    const eol = rest.indexOf('\r\n')
    const size = eol < 0 ? Number.NaN : Number.parseInt(rest.subarray(0, eol).toString('latin1'), 16)
    if (size === 0) return { complete: true, status, body: Buffer.concat(parts) }
    if (!(rest.length >= eol + size + 4)) return { complete: false, status, body: Buffer.concat(parts) }
    parts.push(rest.subarray(eol + 2, eol + 2 + size))
    rest = rest.subarray(eol + size + 4)
  }
}

// Errors a library threw (or, for ours, logged) while handling the current request.
let errors = []
const logger = {
  level: 'warn',
  stream: { write: (line) => JSON.parse(line).err && errors.push({ ...JSON.parse(line).err, logged: true }) }
}
/** Run fn, recording what it throws. */
async function attempt(fn) {
  try {
    await fn()
  } catch (err) {
    errors.push(err)
  }
}
const caseOf = (request) => CASES[Number(request.params.i)]
const defined = (o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined))
/** The case as `{ data, event, id }` (or with `key` for data), without the missing fields. */
const fields = (c, key = 'data') => defined({ [key]: c.html, event: c.event, id: c.id })
const opts = (c) => (c.id === undefined ? undefined : { id: c.id })
const hasEventOrId = (c) => c.event !== undefined || c.id !== undefined

/** A Fastify server on a free port with GET /c/:i. */
async function fastify(setup, route, handler) {
  const app = Fastify({ logger })
  await setup?.(app)
  app.get('/c/:i', route, handler)
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { port: app.server.address().port, close: () => app.close() }
}
const withOurs = (handler) => () => fastify((app) => app.register(ours.default, { heartbeatMs: 0 }), {}, handler)
const fSse = (route, message) => () =>
  fastify(
    (app) => app.register(fastifySse, { heartbeatInterval: 0 }),
    { sse: route },
    (request, reply) => attempt(() => reply.sse.send(message(caseOf(request))))
  )
const betterSse = (sessionOpts) => () =>
  fastify(null, {}, async (request, reply) => {
    const c = caseOf(request)
    reply.hijack()
    await attempt(async () => {
      const session = await createSession(request.raw, reply.raw, { keepAlive: null, ...sessionOpts })
      if (c.event === undefined && c.id === undefined) session.push(c.html)
      else session.push(c.html, c.event ?? 'message', c.id)
    })
    reply.raw.end()
  })
async function hono() {
  const app = new Hono()
  app.get('/c/:i', (ctx) => streamSSE(ctx, (s) => attempt(() => s.writeSSE(fields(CASES[Number(ctx.req.param('i'))])))))
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' })
  await new Promise((resolve) => server.once('listening', resolve))
  return {
    port: server.address().port,
    close: () => new Promise((resolve) => server.close(resolve) && server.closeAllConnections())
  }
}
const sseV2 = () =>
  fastify(
    (app) => app.register(FastifySSEPlugin),
    {},
    (request, reply) => {
      attempt(() => reply.sse(fields(caseOf(request))))
      // "the connection is kept open until you call reply.sseContext.source.end()"
      if (reply.sseContext?.source) reply.sseContext.source.end()
      else reply.send('')
    }
  )
const datastar = () =>
  fastify(null, {}, async (request, reply) => {
    const c = caseOf(request)
    const options = c.id === undefined ? undefined : { eventId: c.id }
    reply.hijack()
    await attempt(() =>
      ServerSentEventGenerator.stream(request.raw, reply.raw, (s) => attempt(() => s.patchElements(c.html, options)))
    )
    if (!reply.raw.writableEnded) reply.raw.end()
  })

/** The handlers for ours, one per API. */
const oursApi = {
  message(request, reply) {
    const c = caseOf(request)
    let frame = []
    attempt(() => (frame = [ours.sseMessage(c.html, c.event ?? 'message', opts(c))]))
    reply.sse(frame)
  },
  async send(request, reply) {
    const c = caseOf(request)
    const sink = reply.sse()
    await attempt(() => sink.send(c.html, c.event ?? 'message', opts(c)))
    sink.close()
  },
  item(request, reply) {
    reply.sse([fields(caseOf(request), 'html')])
  },
  string: (request, reply) => reply.sse([caseOf(request).html]),
  publish(request, reply) {
    const c = caseOf(request)
    const sink = reply.sse({ topics: [`t${request.params.i}`] })
    setImmediate(async () => {
      await attempt(() => this.sse.publish(`t${request.params.i}`, c.html, c.event ?? 'message'))
      sink.close()
    })
  }
}
const htmlOf = (c) => c.html
const asObject = (c) => ({ data: c.html, event: c.event, id: c.id })
const lib = (name, api, start, extra) => ({ name, api, start, ...extra })
const idOnly = (c) => c.id !== undefined && c.event === undefined
/** Every library and API; `skip`: the cases it cannot express (—). */
const LIBS = [
  lib('ours', '`reply.sse([sseMessage(html, event, { id })])`', withOurs(oursApi.message)),
  lib('ours', '`await reply.sse().send(html, event, { id })`', withOurs(oursApi.send)),
  lib('ours', '`reply.sse([{ html, event, id }])`', withOurs(oursApi.item)),
  lib('ours', '`reply.sse([html])` (a plain string item)', withOurs(oursApi.string), { skip: hasEventOrId }),
  // publish assigns the id itself
  lib('ours', '`app.sse.publish(topic, html, event)` to a `reply.sse({ topics })` stream', withOurs(oursApi.publish), {
    ignoreId: true,
    skip: idOnly
  }),
  lib('@fastify/sse', '`reply.sse.send(html)` (string form)', fSse('only', htmlOf), { skip: hasEventOrId }),
  lib('@fastify/sse', '`reply.sse.send({ data: html, event, id })` (default serializer)', fSse('only', asObject)),
  lib(
    '@fastify/sse',
    '`reply.sse.send({ data: html, event, id })` with route option `serializer: String`',
    fSse({ kind: 'only', serializer: String }, asObject)
  ),
  lib('fastify-sse-v2', '`reply.sse({ data: html, event, id })`', sseV2),
  lib('better-sse', '`session.push(html, event, id)` (default serializer)', betterSse({})),
  lib('better-sse', '`session.push(html, event, id)` with `serializer: String`', betterSse({ serializer: String })),
  lib(
    'better-sse',
    "`session.push(...)` with bench/servers.mjs's line-splitting serializer",
    betterSse({ serializer: splitLines })
  ),
  lib('hono', '`streamSSE(c, (s) => s.writeSSE({ data: html, event, id }))`', hono),
  // patchElements has no event name option
  lib(
    '@starfederation/datastar-sdk',
    '`ServerSentEventGenerator.stream(req, res, (s) => s.patchElements(html, { eventId }))`',
    datastar,
    { datastar: true, skip: (c) => c.event !== undefined && c.id === undefined }
  )
]

const q = (s, n = 40) => (JSON.stringify(s).length > n ? `${JSON.stringify(s).slice(0, n)}…"` : JSON.stringify(s))
/** s as JSON without the quotes, as a markdown code span. */
const shown = (s) => `\`${JSON.stringify(s).slice(1, -1).replaceAll('`', "'")}\``

/** How got differs from want, in a few words (both LF-only). */
function dataDiff(want, got, original) {
  if (got === JSON.stringify(want) || got === JSON.stringify(original))
    return ['JSON', 'JSON-encoded: data is `JSON.stringify(html)`']
  if (want.endsWith('\n') && got === want.replace(/\n+$/, '')) return ['LF dropped', 'trailing line break dropped']
  const [w, g] = [want.split('\n'), got.split('\n')]
  if (g.length < w.length)
    return ['lines lost', `${w.length - g.length} of ${w.length} lines lost (data = ${q(got, 48)})`]
  if (g.length === w.length && w.every((l, i) => g[i] === l || g[i] === l.slice(1)))
    return ['space lost', 'a leading space lost']
  let i = 0
  while (want[i] === got[i]) i++
  return ['altered', `differs from char ${i}: got ${q(got.slice(i), 36)}`]
}

/** One cell: [tag, detail]; a ✅ cell has no detail. */
function classify(lib, c, r) {
  const errText = (e) =>
    `${e.logged ? 'logged' : 'threw'} ${e.type ?? e.name ?? 'Error'}${e.code ? ` ${e.code}` : ''}: ${String(e.message).split('\n')[0].slice(0, 90)}`
  const events = []
  const parser = createParser({
    onEvent: (ev) => events.push({ type: ev.event ?? 'message', id: ev.id, data: ev.data })
  })
  parser.feed(r.body.toString('utf8'))
  if (events.length === 0)
    return r.errors.length
      ? ['🛑 error', `refused: ${errText(r.errors[0])}`]
      : ['⚠️ no event', `no event dispatched (${r.how})`]
  if (events.length > 1)
    return [`❌ ${events.length} events`, `INJECTED: ${events.map((e) => `${e.type} ${q(e.data, 24)}`).join(', ')}`]
  const [ev] = events
  const want = lib.datastar ? 'datastar-patch-elements' : (c.event ?? 'message')
  if (/injected/.test(`${c.event}${c.id}`) && ev.data.includes('injected'))
    return ['❌ field', `INJECTED: \`data: injected\` became a data line (data = ${q(ev.data)})`]
  if (ev.type !== want)
    return c.hostile
      ? ['❌ event type', `INJECTED: event type became ${q(ev.type)}`]
      : ['⚠️ altered', `event type ${q(ev.type)}`]
  if (c.id !== undefined && !lib.ignoreId && ev.id !== c.id)
    return ['⚠️ altered', `id ${q(ev.id)} instead of ${q(c.id)}`]
  // Datastar sends the HTML as `elements <line>` data lines
  const data = lib.datastar
    ? Array.from(ev.data.matchAll(/(?:^|\n)elements ([^\n]*)/g), (m) => m[1]).join('\n')
    : ev.data
  const normalized = c.html.replace(/\r\n|\r|\n/g, '\n')
  if (data === normalized) return ['✅', null]
  const [tag, text] = dataDiff(normalized, data, c.html)
  return [`⚠️ ${tag}`, `altered: ${text}`]
}

const rows = []
const details = []
for (const l of LIBS) {
  const server = await l.start()
  const cells = []
  for (const [i, c] of CASES.entries()) {
    if (l.skip?.(c)) {
      cells.push('—')
      continue
    }
    errors = []
    const r = await rawGet(server.port, `/c/${i}`)
    await sleep(20) // late log lines
    const [tag, text] = classify(l, c, { ...r, errors })
    cells.push(tag)
    const wire = r.body.toString('utf8').replace(/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}/g, '<uuid>') // better-sse's random ids
    if (text) details.push([l.name, l.api, c.label, text, c.key === 'big' ? '(100 KB)' : shown(wire.slice(0, 120))])
  }
  await Promise.race([server.close(), sleep(3000)])
  rows.push([l.name, l.api, ...cells])
}

const require = createRequire(path.join(ROOT, 'package.json'))
/** `name version`, from the package.json above the package's entry point. */
function version(name) {
  for (let dir = path.dirname(require.resolve(name)); dir !== '/'; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'))
      if (pkg.name === name) return `${name} ${pkg.version}`
    } catch {}
  }
}
const packages = ['fastify', '@fastify/sse', 'fastify-sse-v2', 'better-sse', 'hono', '@hono/node-server']
packages.push('@starfederation/datastar-sdk', 'eventsource-parser')
const input = (c) => [
  c.key === 'big' ? '99,999 bytes' : `html ${shown(c.html)}`,
  c.event && `event ${shown(c.event)}`,
  c.id && `id ${shown(c.id)}`
]
await save('framing', {
  title: 'Results',
  notes: [
    `versions: ${packages.map(version).join('; ')}`,
    'a real server per library on 127.0.0.1:0 (Fastify 5, or @hono/node-server for Hono); per case a raw socket sends `GET /c/<case>`, the handler hands the case to the library through the API shown, then ends the stream; the de-chunked body is judged by eventsource-parser (a conforming WHATWG parser)',
    'expected: one event of the given type (`message` when none) and id whose data is the HTML; an SSE parser cannot return a CR inside data, so for CRLF and lone CR the HTML with each line break read as LF counts as a round trip',
    'legend: ✅ exact round trip · ⚠️ altered or no event · ❌ injected (input became SSE fields or extra events) · 🛑 refused with an error · — not applicable'
  ],
  tables: [
    { title: 'Framing per library and case', head: ['library', 'API', ...CASES.map((c) => c.key)], rows },
    {
      title: 'Cases',
      head: ['key', 'case', 'input'],
      rows: CASES.map((c) => [c.key, c.label, input(c).filter(Boolean).join(', ')])
    },
    {
      title: 'Details: every cell that is not an exact round trip',
      head: ['library', 'API', 'case', 'result', 'wire'],
      rows: details.map((d) => d.map((s) => s.replaceAll('|', '\\|')))
    }
  ]
})
process.exit(0)
