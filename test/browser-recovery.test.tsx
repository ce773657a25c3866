/**
 * The recovery grid (issue 13): every kind of page comes back by itself and
 * shows every item published since its render once, in order, whatever the
 * server or the way to it answers.
 *
 * Clients: an htmx 2 page (`<HtmxScripts>` + `<SseSource>`), an htmx 4 page
 * (`htmx={4}`), and a page that opens `new EventSource(url)` itself with the
 * README's few-line recipe (`RECIPE` below, the very text the README shows).
 * Situations: a refusal at the first connect (503 `maxConnections`, 429
 * `maxConnectionsPerClient`), a refusal at a reconnect, a proxy answering 502
 * for 1.5 s at the first connect, a lifetime end, a drain behind a proxy that
 * moves to another instance, an instance killed (SIGKILL, a child process)
 * behind a proxy that fails over to another (Redis), Redis unreachable from the
 * instance that takes a resume. The three clients of a situation run at once,
 * in one Chromium, each page in a context of its own (so none is a background
 * tab and each has its own six connections).
 *
 * The test waits on conditions only. The one timed thing is a fault: the proxy
 * that fails stream requests does so for 1.5 s.
 */
import { type IncomingMessage, request, type ServerResponse } from 'node:http'
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'
import { escapeHtml } from '@kitajs/html'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Page } from 'playwright-core'
import t, { type Test } from 'tap'
import { HtmxScripts, Partial, SseSource } from '../components/index.js'
import { redisBroker } from '../lib/broker/redis.js'
import htmlSse, { type Broker, type HtmlSseOptions, memoryBroker, type SseSink } from '../lib/index.js'
import { forward, launchChromium, listenUntilTeardown, startProxy } from './helpers/browser.js'
import { itemsOf, itemsPage } from './helpers/items-page.js'
import { childInstance, privateRedis, uniquePrefix } from './helpers/redis.js'
import { type Client, connect, deferred, until } from './helpers/sse.js'

// Nine situations, one after the other (see SITUATIONS): about 3 minutes.
t.setTimeout(600_000)
const browser = await launchChromium()
t.teardown(() => browser.close())
const redis = await privateRedis(t)

/**
 * The README's recipe for a page that opens its EventSource itself. A browser
 * reconnects an EventSource by itself after a stream ends or the network drops
 * (with `Last-Event-ID`), but an HTTP error status (a proxy's 502) closes it for
 * good: then the page opens a new one, after a growing, jittered delay, from
 * the last id it saw (at first the id the page was rendered at).
 */
export const RECIPE = `const items = document.getElementById('items')
let lastEventId = items.dataset.lastEventId // the id the page was rendered at
let failures = 0
function connect() {
  const url = new URL(items.dataset.url, location.href)
  if (lastEventId) url.searchParams.set('lastEventId', lastEventId)
  const source = new EventSource(url)
  source.onopen = () => { failures = 0 }
  source.onmessage = (event) => {
    lastEventId = event.lastEventId
    items.insertAdjacentHTML('beforeend', event.data)
  }
  source.addEventListener('reset', () => location.reload()) // too far behind: refetch the page
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) return // the browser retries by itself
    const delay = Math.min(1000 * 2 ** failures++, 30000)
    setTimeout(connect, delay * (0.5 + Math.random()))
  }
}
connect()`

type ClientKind = 'htmx2' | 'htmx4' | 'eventsource'
const CLIENTS: readonly ClientKind[] = ['htmx2', 'htmx4', 'eventsource']
const NAMES: Record<ClientKind, string> = { htmx2: 'htmx 2', htmx4: 'htmx 4', eventsource: 'new EventSource()' }

/** A page whose state is a list of items, and whose stream (`url`) appends new ones. */
async function pageOf(client: ClientKind, url: string, lastEventId: string | null, items: string[]): Promise<string> {
  const children = items.map((n) => (
    <p class="item" safe>
      {n}
    </p>
  ))
  if (client !== 'eventsource') return itemsPage({ htmx: client === 'htmx4' ? 4 : 2, url, lastEventId, children })
  const state = (await Promise.all(children)).join('')
  return (
    '<!doctype html><html lang="en"><head><title>items</title></head><body>' +
    `<div id="items" data-url="${escapeHtml(url)}" data-last-event-id="${escapeHtml(lastEventId ?? '')}">${state}</div>` +
    `<script>${RECIPE}</script></body></html>`
  )
}

/**
 * The app's state: items published one at a time (10 a second while running)
 * through `via()`. A render takes the state and the id it is current at between
 * two publishes, so a page starts exactly where its stream resumes.
 */
class Feed {
  readonly items: string[] = []
  readonly errors: Error[] = []
  #chain: Promise<void> = Promise.resolve()
  #n = 0
  #timer: NodeJS.Timeout | undefined
  constructor(readonly via: () => FastifyInstance) {}

  /** Publishes `text` after what is queued; resolves once it is published. */
  publish(text: string): Promise<void> {
    this.#chain = this.#chain.then(async () => {
      try {
        await this.via().sse.publish(
          'items',
          <p class="item" safe>
            {text}
          </p>
        )
        this.items.push(text)
      } catch (err) {
        this.errors.push(err as Error)
      }
    })
    return this.#chain
  }

  /** How many items were started (the last one may still be on its way). */
  get count(): number {
    return this.#n
  }

  start(t: Test): void {
    this.#timer = setInterval(() => void this.publish(String(++this.#n)), 100)
    t.teardown(() => clearInterval(this.#timer))
  }

  /** Waits until `more` further items are published. */
  async further(more: number, what: string): Promise<void> {
    const target = this.items.length + more
    await until(() => this.items.length >= target, 10_000, what)
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer)
    await this.#chain
  }

  /** The state and its id, between two publishes. */
  render(app: FastifyInstance): Promise<{ items: string[]; lastEventId: string | null }> {
    const rendered = this.#chain.then(async () => ({ items: [...this.items], lastEventId: await app.sse.lastId() }))
    this.#chain = rendered.then(
      () => undefined,
      () => undefined
    )
    return rendered
  }
}

/** A stream request as the app saw it. */
interface StreamRequest {
  tab: string
  header: string | undefined
  query: string | undefined
  refused: boolean
}

interface Instance {
  app: FastifyInstance
  base: string
  streams: StreamRequest[]
  /** Open streams of the pages. */
  sinks: Set<SseSink>
  /** While set, stream requests wait for it before they open (a handler awaiting, say, a session). */
  gate: Promise<void> | null
  held: number
}

/**
 * An instance serving the page (`/?client=…&tab=…`, rendered from `feed`), its
 * stream (`/events?topics=items&tab=…`, the route of the child instances too)
 * and `/hold`, streams a test opens to take the slots.
 */
async function instance(t: Test, feed: Feed, options: HtmlSseOptions = {}): Promise<Instance> {
  const app = Fastify()
  await app.register(htmlSse, { heartbeatMs: 0, ...options })
  // A broker the test made (instances may share one) is closed when the test ends.
  const broker = options.broker
  if (broker !== undefined) t.teardown(() => broker.close())
  const state: Instance = { app, base: '', streams: [], sinks: new Set(), gate: null, held: 0 }
  app.get<{ Querystring: { client?: ClientKind; tab?: string } }>('/', async (request, reply) => {
    const client = request.query.client ?? 'htmx2'
    const { items, lastEventId } = await feed.render(app)
    const url = `/events?topics=items&tab=${encodeURIComponent(request.query.tab ?? '')}`
    return reply.type('text/html; charset=utf-8').send(await pageOf(client, url, lastEventId, items))
  })
  app.get<{ Querystring: { tab?: string; lastEventId?: string } }>('/events', async (request, reply) => {
    const gate = state.gate
    if (gate !== null) {
      state.held++
      await gate
      state.held--
    }
    const header = request.headers['last-event-id']
    const refusedBefore = app.sse.stats().refused
    const sink = reply.sse({ topics: ['items'] })
    state.streams.push({
      tab: request.query.tab ?? '',
      header: typeof header === 'string' ? header : undefined,
      query: request.query.lastEventId,
      refused: app.sse.stats().refused > refusedBefore
    })
    if (!sink.signal.aborted) {
      state.sinks.add(sink)
      void sink.closed.then(() => state.sinks.delete(sink))
    }
  })
  app.get('/hold', (_request, reply) => {
    reply.sse({ topics: ['hold'] })
  })
  app.get('/favicon.ico', (_request, reply) => reply.code(204).send())
  state.base = await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return state
}

/**
 * When each page's stream requests left the browser, by tab: the browser's own
 * timing (epoch ms), so a busy test process that handles several requests in
 * one turn does not make reconnects look bunched.
 */
type Sent = Map<string, number[]>

/**
 * Opens `tabs` pages of `client` at once, each in a context of its own; page
 * errors go to `errors`, the start of each stream request to `sent`.
 */
async function openPages(
  t: Test,
  base: string,
  client: ClientKind,
  tabs: string[],
  errors: string[],
  sent: Sent = new Map()
): Promise<Page[]> {
  return Promise.all(
    tabs.map(async (tab) => {
      const context = await browser.newContext()
      t.teardown(() => context.close())
      const page = await context.newPage()
      page.on('pageerror', (err) => errors.push(`${tab}: ${err.message}`))
      page.on('response', (response) => {
        const request = response.request()
        if (new URL(request.url()).pathname !== '/events') return
        sent.set(tab, [...(sent.get(tab) ?? []), request.timing().startTime])
      })
      await page.goto(`${base}/?client=${client}&tab=${tab}`, { timeout: 60_000 })
      return page
    })
  )
}

const tabsOf = (n: number) => Array.from({ length: n }, (_, i) => `p${i + 1}`)

/** Stops the feed, publishes `end`, and checks every page shows every item once, in order, then `end`. */
async function checkPages(t: Test, feed: Feed, pages: Page[], errors: string[]): Promise<void> {
  await feed.stop()
  await feed.publish('end')
  t.same(feed.errors, [], 'every publish succeeded')
  for (const [i, page] of pages.entries()) {
    await page.waitForFunction(() => document.querySelector('#items .item:last-child')?.textContent === 'end', null, {
      timeout: 20_000
    })
    const shown = await itemsOf(page)
    t.same(shown, feed.items, `page ${i + 1}: items 1 to ${feed.items.length - 1}, each once, in order`)
  }
  t.same(errors, [], 'no page error')
}

/** The most of `times` that lie within `ms` of each other. */
function densest(times: number[], ms: number): number {
  const sorted = [...times].sort((a, b) => a - b)
  let best = 0
  let from = 0
  for (let i = 0; i < sorted.length; i++) {
    while ((sorted[i] as number) - (sorted[from] as number) > ms) from++
    best = Math.max(best, i - from + 1)
  }
  return best
}

/** For each tab, the index (among its stream requests) of the one that followed its first refusal. */
function afterRefusal(streams: StreamRequest[]): (tab: string) => number {
  return (tab) => streams.filter((s) => s.tab === tab).findIndex((s) => s.refused) + 1
}

/** For each tab, when its stream request number `indexOf(tab)` left the browser. */
async function sentTimes(sent: Sent, tabs: string[], indexOf: (tab: string) => number): Promise<number[]> {
  await until(
    () => tabs.every((tab) => (sent.get(tab)?.length ?? 0) > indexOf(tab)),
    10_000,
    'the browser to report every reconnect'
  )
  return tabs.map((tab) => [...(sent.get(tab) as number[])].sort((x, y) => x - y)[indexOf(tab)] as number)
}

/** Checks that no more than half of the reconnects (one per page, when they left the browser) lie within 100 ms of each other. */
function checkSpread(t: Test, times: number[], pages: number): void {
  t.equal(times.length, pages, `each of the ${pages} pages reconnected`)
  const most = densest(times, 100)
  const first = Math.min(...times)
  const offsets = times.map((at) => Math.round(at - first)).sort((x, y) => x - y)
  t.ok(
    most <= pages / 2,
    `at most half of the reconnects within 100 ms of each other: ${most} of ${pages} (at +${offsets.join(', +')} ms)`
  )
}

/** Every stream request after the first of each tab carried a position (the header or the rendered query). */
function checkPositions(t: Test, streams: StreamRequest[]): void {
  t.ok(
    streams.every((s) => s.header !== undefined || s.query !== undefined),
    `every one of ${streams.length} stream requests carried a position`
  )
}

/** Opens `n` streams that take slots (from 127.0.0.1, like the pages). */
async function holders(t: Test, base: string, n: number): Promise<Client[]> {
  const clients = await Promise.all(Array.from({ length: n }, () => connect(`${base}/hold`)))
  t.teardown(() => {
    for (const client of clients) client.close()
  })
  return clients
}

/** 8 pages for refusals and drains, so their spread can be judged; 2 elsewhere. */
const MANY = 8
const FEW = 2

/** A load balancer's way of passing a request to the first of `targets` that answers. */
function failover(targets: readonly string[], req: IncomingMessage, res: ServerResponse, i = 0): void {
  const upstream = request(
    (targets[i] as string) + req.url,
    { method: req.method, headers: req.headers, agent: false },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers)
      up.pipe(res)
      // The instance died mid-stream: drop the client's connection, as a load balancer does.
      up.on('error', () => res.destroy())
      up.on('close', () => {
        if (!up.complete) res.destroy()
      })
    }
  )
  upstream.on('error', () => {
    if (!res.headersSent && i + 1 < targets.length) failover(targets, req, res, i + 1)
    else res.destroy()
  })
  res.on('close', () => upstream.destroy())
  upstream.end()
}

/** A TCP relay to Redis that a test cuts (every connection dropped, new ones refused) and heals. */
async function redisRelay(t: Test, port: number) {
  const sockets = new Set<Socket>()
  let cut = false
  const server: Server = createServer((socket) => {
    if (cut) {
      socket.destroy()
      return
    }
    const upstream = tcpConnect(port, '127.0.0.1')
    for (const [one, other] of [
      [socket, upstream],
      [upstream, socket]
    ] as const) {
      sockets.add(one)
      one.on('error', () => other.destroy())
      one.on('close', () => {
        sockets.delete(one)
        other.destroy()
      })
    }
    socket.pipe(upstream)
    upstream.pipe(socket)
  })
  const relayPort = await listenUntilTeardown(t, server, sockets)
  return {
    url: `redis://127.0.0.1:${relayPort}`,
    cut() {
      cut = true
      for (const socket of sockets) socket.destroy()
    },
    heal() {
      cut = false
    }
  }
}

/** Refused at the first connect: `limit` is taken by other streams when the pages load, then frees. */
async function refusedAtFirstConnect(
  t: Test,
  client: ClientKind,
  limit: 'maxConnections' | 'maxConnectionsPerClient'
): Promise<void> {
  const feed = new Feed(() => a.app)
  const a = await instance(t, feed, { [limit]: MANY })
  feed.start(t)
  await feed.further(3, 'items before the pages')
  const held = await holders(t, a.base, MANY)
  await until(() => a.app.sse.stats().connections === MANY, 10_000, 'the holders to take every slot')

  // The first connects wait in the handler until every page has loaded, then all are refused at once.
  const gate = deferred()
  a.gate = gate.promise
  const tabs = tabsOf(MANY)
  const errors: string[] = []
  const sent: Sent = new Map()
  const pages = await openPages(t, a.base, client, tabs, errors, sent)
  await until(() => a.held === MANY, 20_000, 'every page to make its first connect')
  a.gate = null
  gate.resolve()
  await backAfterRefusal(t, { a, feed, held, tabs, sent, pages, errors }, 20_000, 'every page to be refused')
}

/** Refused at a reconnect: the streams end, and while the pages reconnect other streams take the slots. */
async function refusedAtReconnect(t: Test, client: ClientKind): Promise<void> {
  const feed = new Feed(() => a.app)
  const a = await instance(t, feed, { maxConnections: MANY })
  feed.start(t)
  await feed.further(3, 'items before the pages')
  const tabs = tabsOf(MANY)
  const errors: string[] = []
  const sent: Sent = new Map()
  const pages = await openPages(t, a.base, client, tabs, errors, sent)
  await until(() => a.app.sse.stats().topics.items === MANY, 20_000, 'every page to connect')
  await feed.further(3, 'items on the first streams')

  const gate = deferred()
  a.gate = gate.promise
  for (const sink of a.sinks) sink.close()
  await until(() => a.held === MANY, 20_000, 'every page to reconnect (held in the handler)')
  const held = await holders(t, a.base, MANY)
  await until(() => a.app.sse.stats().connections === MANY, 10_000, 'the holders to take every slot')
  a.gate = null
  gate.resolve()
  await backAfterRefusal(t, { a, feed, held, tabs, sent, pages, errors }, 10_000, 'every reconnect to be refused')
}

/**
 * Once every page was refused, the holders let go: every page comes back by
 * itself, spread out, at the position it had, and gets what follows.
 */
async function backAfterRefusal(
  t: Test,
  run: { a: Instance; feed: Feed; held: Client[]; tabs: string[]; sent: Sent; pages: Page[]; errors: string[] },
  ms: number,
  what: string
): Promise<void> {
  const { a, feed, held, tabs, sent, pages, errors } = run
  await until(() => tabs.every((tab) => a.streams.some((s) => s.tab === tab && s.refused)), ms, what)
  for (const holder of held) holder.close()
  await until(() => a.app.sse.stats().topics.items === MANY, 30_000, 'every page to come back')
  checkSpread(t, await sentTimes(sent, tabs, afterRefusal(a.streams)), MANY)
  checkPositions(t, a.streams)
  await feed.further(3, 'items after the pages came back')
  await checkPages(t, feed, pages, errors)
}

/**
 * A proxy fails the stream requests for 1.5 s from the first one: with a 502
 * (`answer`), or by closing the connection without an answer (`drop`).
 */
async function failingProxyAtFirstConnect(t: Test, client: ClientKind, how: 'answer' | 'drop'): Promise<void> {
  const feed = new Feed(() => a.app)
  const a = await instance(t, feed)
  let failing = true
  let failed = 0
  const { base } = await startProxy(t, (req, res) => {
    if (failing && req.url?.startsWith('/events')) {
      if (failed++ === 0) setTimeout(() => (failing = false), 1500)
      if (how === 'drop') req.socket.destroy()
      else res.writeHead(502, { 'content-type': 'text/plain', connection: 'close' }).end('Bad Gateway')
      return
    }
    forward(a.base, req, res)
  })
  feed.start(t)
  await feed.further(3, 'items before the pages')
  const tabs = tabsOf(FEW)
  const errors: string[] = []
  const pages = await openPages(t, base, client, tabs, errors)
  await until(() => a.app.sse.stats().topics.items === FEW, 30_000, 'every page to connect after the failures')
  t.ok(failed >= FEW, `the proxy failed ${failed} stream requests`)
  for (const tab of tabs) {
    const first = a.streams.find((s) => s.tab === tab)
    t.ok(
      first !== undefined && first.header === undefined && first.query !== undefined,
      `${tab}: the first stream that got through resumed from the id the page was rendered at`
    )
  }
  await feed.further(3, 'items after the pages connected')
  await checkPages(t, feed, pages, errors)
  for (const page of pages) {
    t.notMatch(await page.textContent('#items'), /Bad Gateway/, 'no error page was swapped in')
  }
}

/** Each stream ends after its lifetime; the pages reconnect. */
async function lifetimeEnd(t: Test, client: ClientKind): Promise<void> {
  const feed = new Feed(() => a.app)
  const a = await instance(t, feed, { maxLifetimeMs: 1000 })
  feed.start(t)
  await feed.further(3, 'items before the pages')
  const tabs = tabsOf(FEW)
  const errors: string[] = []
  const pages = await openPages(t, a.base, client, tabs, errors)
  await until(
    () => tabs.every((tab) => a.streams.filter((s) => s.tab === tab).length >= 3),
    30_000,
    'two lifetime ends and reconnects per page'
  )
  await until(() => a.app.sse.stats().topics.items === FEW, 10_000, 'every page to be connected')
  checkPositions(t, a.streams)
  await checkPages(t, feed, pages, errors)
}

/** A rolling deploy: the proxy moves to B, then A closes (drainMs, the default 5 s). */
async function drain(t: Test, client: ClientKind): Promise<void> {
  const broker: Broker = memoryBroker()
  let current: Instance
  const feed = new Feed(() => current.app)
  const a = await instance(t, feed, { broker })
  const b = await instance(t, feed, { broker })
  current = a
  let target = a.base
  const { base } = await startProxy(t, (req, res) => forward(target, req, res))
  feed.start(t)
  await feed.further(3, 'items before the pages')
  const tabs = tabsOf(MANY)
  const errors: string[] = []
  const sent: Sent = new Map()
  const pages = await openPages(t, base, client, tabs, errors, sent)
  await until(() => a.app.sse.stats().topics.items === MANY, 20_000, 'every page to connect to A')
  await feed.further(3, 'items on A')

  target = b.base
  current = b
  await a.app.close()
  await until(() => b.app.sse.stats().topics.items === MANY, 30_000, 'every page to reconnect to B')
  // The first stream request of each page on B follows the ones it made to A.
  const onA = (tab: string) => a.streams.filter((s) => s.tab === tab).length
  checkSpread(t, await sentTimes(sent, tabs, onA), MANY)
  const reconnects = tabs.flatMap((tab) => b.streams.find((s) => s.tab === tab) ?? [])
  t.ok(
    reconnects.length === MANY && reconnects.every((s) => s.header !== undefined),
    'each page resumed on B with Last-Event-ID'
  )
  await feed.further(3, 'items on B')
  await checkPages(t, feed, pages, errors)
}

/** Instance A (a child process) is killed; the proxy fails over to B; both share Redis. */
async function killed(t: Test, client: ClientKind): Promise<void> {
  const prefix = uniquePrefix()
  const child = await childInstance(t, redis.url, prefix)
  const feed = new Feed(() => b.app)
  const b = await instance(t, feed, { broker: redisBroker({ url: redis.url, prefix }) })
  const { base } = await startProxy(t, (req, res) => {
    if (req.url?.startsWith('/events')) failover([child.base, b.base], req, res)
    else forward(b.base, req, res)
  })
  feed.start(t)
  await feed.further(3, 'items before the pages')
  const tabs = tabsOf(FEW)
  const errors: string[] = []
  const pages = await openPages(t, base, client, tabs, errors)
  await until(async () => (await child.stats()).connections === FEW, 20_000, 'every page to connect to A')
  await feed.further(5, 'items through A')
  child.kill()
  await until(() => b.app.sse.stats().topics.items === FEW, 30_000, 'every page to fail over to B')
  t.ok(
    b.streams.length >= FEW && b.streams.every((s) => s.header !== undefined),
    `each page resumed on B with Last-Event-ID (${b.streams.length} stream requests)`
  )
  await feed.further(3, 'items on B')
  await checkPages(t, feed, pages, errors)
}

/**
 * The pages move from A to B while B cannot reach Redis (a partition between B
 * and Redis; A still publishes): they carry ids B's reader has not seen, so
 * each resume needs Redis, and ends with a retry hint until Redis is back.
 */
async function redisUnreachable(t: Test, client: ClientKind): Promise<void> {
  const prefix = uniquePrefix()
  const relay = await redisRelay(t, redis.port)
  const feed = new Feed(() => a.app)
  const a = await instance(t, feed, { broker: redisBroker({ url: redis.url, prefix }) })
  const b = await instance(t, feed, { broker: redisBroker({ url: relay.url, prefix }) })
  let target = a.base
  const proxy = await startProxy(t, (req, res) => forward(target, req, res))
  feed.start(t)
  await feed.further(3, 'items before the pages')
  const tabs = tabsOf(FEW)
  const errors: string[] = []
  const pages = await openPages(t, proxy.base, client, tabs, errors)
  await until(() => a.app.sse.stats().topics.items === FEW, 20_000, 'every page to connect to A')

  relay.cut()
  const cutAt = feed.count
  await feed.further(3, 'items B does not read')
  for (const page of pages) {
    await page.waitForFunction(
      (n) => Array.from(document.querySelectorAll('#items .item')).some((el) => Number(el.textContent) > n + 1),
      cutAt,
      { timeout: 20_000 }
    )
  }
  target = b.base
  for (const socket of proxy.sockets) socket.destroy()
  await until(
    () => tabs.every((tab) => b.streams.filter((s) => s.tab === tab).length >= 2),
    30_000,
    'each page to try B twice while B cannot reach Redis'
  )
  const meanwhile = [...b.streams]
  relay.heal()
  await until(() => b.app.sse.stats().topics.items === FEW, 30_000, 'every page to resume on B once Redis is back')
  for (const tab of tabs) {
    const ids = new Set(meanwhile.filter((s) => s.tab === tab).map((s) => s.header))
    t.equal(
      ids.size,
      1,
      `${tab}: its resumes on B ended while B could not reach Redis, and each came back with the same id`
    )
  }
  t.ok(
    b.streams.every((s) => s.header !== undefined),
    'every resume on B carried Last-Event-ID'
  )
  await feed.further(3, 'items after Redis is back')
  await checkPages(t, feed, pages, errors)
}

/**
 * The situations, one after another. The three clients of a situation run at
 * once, except where 8 pages per client judge the spread of reconnects: there
 * one client at a time, so that 24 pages loading and rendering on a small
 * machine do not make Chromium start reconnects together that the server spread.
 */
const SITUATIONS: Array<[name: string, spread: boolean, cell: (t: Test, client: ClientKind) => Promise<void>]> = [
  ['refused at the first connect (503, maxConnections)', true, (t, c) => refusedAtFirstConnect(t, c, 'maxConnections')],
  [
    'refused at the first connect (429, maxConnectionsPerClient)',
    true,
    (t, c) => refusedAtFirstConnect(t, c, 'maxConnectionsPerClient')
  ],
  ['refused at a reconnect', true, refusedAtReconnect],
  ['a proxy answers 502 for 1.5 s at the first connect', false, (t, c) => failingProxyAtFirstConnect(t, c, 'answer')],
  [
    'a proxy drops the connection unanswered for 1.5 s at the first connect',
    false,
    (t, c) => failingProxyAtFirstConnect(t, c, 'drop')
  ],
  ['a lifetime end', false, lifetimeEnd],
  ['a drain (app.close(), the proxy moves to another instance)', true, drain],
  ['an instance killed (SIGKILL), the proxy fails over (Redis)', false, killed],
  ['Redis unreachable during a resume', false, redisUnreachable]
]

for (const [name, spread, cell] of SITUATIONS) {
  t.test(name, { jobs: spread ? 1 : CLIENTS.length }, async (t) => {
    for (const client of CLIENTS) t.test(NAMES[client], (t) => cell(t, client))
  })
}

for (const htmx of [2, 4] as const) {
  t.test(`htmx ${htmx}: <SseSource swap={false}> applies each <Partial> and swaps nothing itself`, async (t) => {
    const app = Fastify()
    await app.register(htmlSse, { heartbeatMs: 0 })
    app.get('/', async (_request, reply) => {
      const page = await (
        <html lang="en">
          <head>
            <title>partials</title>
            <HtmxScripts htmx={htmx} />
          </head>
          <body>
            <SseSource url="/events" htmx={htmx} swap={false} id="source">
              <ul id="notes"></ul>
              <p id="clock">waiting</p>
              <button type="button" id="load" hx-get="/fragment">
                load
              </button>
            </SseSource>
          </body>
        </html>
      )
      return reply.type('text/html; charset=utf-8').send(`<!doctype html>${page}`)
    })
    app.get('/events', (_request, reply) => {
      reply.sse({ topics: ['page'] })
    })
    app.get('/fragment', (_request, reply) => reply.type('text/html; charset=utf-8').send('loaded'))
    const base = await app.listen({ port: 0, host: '127.0.0.1' })
    t.teardown(() => app.close())
    const context = await browser.newContext()
    t.teardown(() => context.close())
    const page = await context.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    await page.goto(base)
    await until(() => app.sse.stats().topics.page === 1, 10_000, 'the stream to open')

    for (const n of ['one', 'two']) {
      await app.sse.publish(
        'page',
        <>
          <Partial target="#notes" swap="beforeend">
            <li safe>{n}</li>
          </Partial>
          <Partial target="#clock">
            <span safe>{`at ${n}`}</span>
          </Partial>
        </>
      )
    }
    // A message that is not a Partial: an element that swaps nothing itself leaves it out.
    await app.sse.publish('page', <b id="stray">stray</b>)
    await app.sse.publish(
      'page',
      <Partial target="#clock">
        <span id="marker">last</span>
      </Partial>
    )
    await page.waitForSelector('#marker', { timeout: 10_000 })
    t.same(
      await page.$$eval('#notes li', (els) => els.map((el) => el.textContent)),
      ['one', 'two'],
      'both items went into #notes, in order'
    )
    t.equal(await page.textContent('#clock'), 'last', '#clock holds the last Partial')
    t.equal(await page.$('#stray'), null, 'the plain message was not swapped into the element')
    t.ok(await page.$('#source > #notes'), "the element's own content is still there")
    await page.click('#load')
    await page.waitForFunction(() => document.querySelector('#load')?.textContent === 'loaded', null, {
      timeout: 10_000
    })
    t.pass('a child with hx-get swaps as usual: it does not inherit hx-swap="none"')
    t.same(errors, [], 'no page error')
  })
}
