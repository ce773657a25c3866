/**
 * The Fastify plugin: option checks, the `reply.sse()` and `app.sse`
 * decorators, the client files, and the hooks that close every stream.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { DEFAULT_ASSETS_PREFIX, serveAssets } from './assets.js'
import { checkReplay, memoryBroker } from './broker/memory.js'
import {
  type Broker,
  type BrokerPublishOptions,
  CONTROL_TOPIC,
  type Presence,
  type TransactionClient
} from './broker/types.js'
import {
  FST_ERR_HTML_SSE_OPTION_INVALID,
  FST_ERR_HTML_SSE_PUBLISH_ID,
  FST_ERR_HTML_SSE_REGISTERED_TWICE,
  FST_ERR_HTML_SSE_SOURCE_INVALID,
  FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED
} from './errors.js'
import { checkRetry, describe, frameBody, type Html, isThenable, type SseMessageOptions } from './frame.js'
import { checkName, checkTopic, controlBody, type DisconnectFilter, Hub, type SseStats } from './hub.js'
import { loadMetrics, type RefuseReason } from './metrics.js'
import { ClosedSink, release, retryFrame, Sink, type SseSink, type SseSource, type SseSourceFactory } from './sink.js'

/** Options of the plugin. */
export interface HtmlSseOptions {
  /** A comment line (`:\n`) on each stream idle this long, in ms; 0 turns heartbeats off. @default 15000 */
  heartbeatMs?: number | undefined
  /** Sends `retry:` with this many ms when a stream opens. @default undefined */
  retryMs?: number | undefined
  /** How many recent events the default broker keeps for `Last-Event-ID` resume; 0 keeps none. @default 1000 */
  replay?: number | undefined
  /**
   * A stream whose unsent bytes pass this while its client is not reading is
   * closed; its browser reconnects and resumes. A client that keeps reading is
   * never shed. @default 1048576
   */
  maxBufferedBytes?: number | undefined
  /** Where published events travel. @default memoryBroker({ replay }) */
  broker?: Broker | undefined
  /** Where the htmx client files are served; `false` serves none. @default '/fastify-html-sse/' */
  assetsPrefix?: string | false | undefined
  /**
   * The most open streams on this instance; past it `reply.sse()` answers 503
   * with a randomised `Retry-After` and closes the connection. @default Infinity
   */
  maxConnections?: number | undefined
  /** The most open streams per `clientKey(request)`; past it 429 with `Retry-After`. @default Infinity */
  maxConnectionsPerClient?: number | undefined
  /** What counts as one client for `maxConnectionsPerClient`. @default (request) => request.ip */
  clientKey?: ((request: FastifyRequest) => string) | undefined
  /**
   * A stream with topics ends after a random time between 0.9x and 1x this,
   * after a `retry:` hint; its client reconnects and resumes exactly. 0: never.
   * @default 0
   */
  maxLifetimeMs?: number | undefined
  /**
   * On `app.close()` every stream gets a `retry:` hint drawn uniformly from
   * `[0, drainMs]`, then ends, so browsers reconnect spread over the window.
   * @default 5000
   */
  drainMs?: number | undefined
  /**
   * A stream whose socket accepts no bytes for this long while bytes wait is
   * dropped (half-open or stalled connections); 0: never. @default 30000
   */
  writeTimeoutMs?: number | undefined
}

/** Options of `reply.sse()`. */
export interface SseReplyOptions {
  /** Topics this stream subscribes to; with `Last-Event-ID`, what it missed of them comes first. */
  topics?: readonly string[] | undefined
  /** Overrides the plugin's `maxLifetimeMs` for this stream; 0: never. */
  maxLifetimeMs?: number | undefined
  /**
   * Who the stream belongs to (a user id, say): counted in `app.sse.presence()`
   * and matched by `app.sse.disconnect({ member })`.
   */
  member?: string | undefined
  /**
   * When the stream ends (a session's expiry, a `Date` or epoch ms): it gets a
   * named `expired` event and ends, and nothing published later reaches it. A
   * time already past sends `expired` at once.
   */
  expiresAt?: Date | number | undefined
}

/** Options of `app.sse.publish()`. */
export type PublishOptions = Omit<SseMessageOptions, 'id'> & {
  /**
   * The app's database client inside its open transaction: the event is written
   * there and reaches streams iff the transaction commits (Postgres broker only).
   */
  transaction?: TransactionClient | undefined
  /**
   * A keyed event supersedes the earlier events with the same key on its topic
   * for resumes: a client that missed several gets only the newest, in its
   * place. Live clients get every one.
   */
  key?: string | undefined
}

/** Options of `app.sse.lastId()`. */
export interface LastIdOptions {
  /**
   * The app's client inside a transaction: the resume point matching what that
   * transaction sees (render in REPEATABLE READ, then take this; Postgres broker only).
   */
  transaction?: TransactionClient | undefined
}

/** `app.sse`: publish to topics and read counters. */
export interface SseHub {
  /**
   * Renders and frames `html` once and sends the same bytes to every stream
   * subscribed to `topic`, on every instance sharing the broker.
   * Resolves to the event's id.
   *
   * @param event - the event type @default 'message'
   * @example
   * ```tsx
   * await app.sse.publish('chat', <Message from={user} text={text} />)
   * ```
   */
  publish(topic: string, html: Html, event?: string, options?: PublishOptions): Promise<string>
  /**
   * The newest id in the broker's log; for an empty log, an id before the first
   * event (null only from a broker that has none). Render a page's
   * state, take `lastId()`, and pass it to `<SseSource lastEventId>`: the stream's
   * first connection resumes from it, so nothing published in between is lost.
   */
  lastId(options?: LastIdOptions): Promise<string | null>
  /** Open streams, subscribers per topic, events published, streams dropped. */
  stats(): SseStats
  /**
   * Open streams on `topic` and their distinct members (sorted), across every
   * instance sharing the broker. Follows opens and closes within about a
   * second; an instance that died leaves it within 15 s.
   */
  presence(topic: string): Promise<Presence>
  /**
   * Ends the streams matching `member` and/or `topic` on every instance, each
   * after a named `revoked` event (`<SseSource close="revoked">` stops the page
   * reconnecting). Resolves once the request is in the broker.
   */
  disconnect(filter: DisconnectFilter): Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Publish HTML to topics and read counters. Added by `fastify-html-sse`. */
    sse: SseHub
  }
  interface FastifyReply {
    /**
     * Opens the event stream of this reply once (a second call returns the same sink).
     * Items of `source` are sent in order; the stream ends with the source unless it has topics.
     * `source` may also be a function of the sink (e.g. a generator function using `sink.signal`).
     * @example
     * ```tsx
     * app.get('/events', (req, reply) => {
     *   reply.sse(ticks())
     * })
     * ```
     */
    sse(source?: SseSource | SseSourceFactory, options?: SseReplyOptions): SseSink
    sse(options: SseReplyOptions): SseSink
  }
}

const kSink = Symbol('fastify-html-sse.sink')

const MAX_TIMER_MS = 2 ** 31 - 1
/** A refused client is told to come back after 2 to 10 s, so refused clients do not return in lockstep. */
const RETRY_AFTER_MIN_S = 2
const RETRY_AFTER_SPREAD_S = 9
/** A refused SSE client's `retry:` hint is drawn from [1 s, 5 s]: spread, and soon enough for a page. */
const REFUSED_RETRY_MIN_MS = 1000
const REFUSED_RETRY_SPREAD_MS = 4000
/** The `retry:` hint at the end of a lifetime, or after a failed resume, is drawn from `[0, this)`. */
const RECONNECT_SPREAD_MS = 1000

/** Servers the plugin is registered on: a second registration is a mistake. */
const registered = new WeakSet<object>()
/** Apps using each broker: the last one to close closes it. */
const brokerUsers = new WeakMap<Broker, number>()

function checkInteger(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID(name, `must be an integer from ${min} to ${max}, got ${String(value)}`)
  }
  return value as number
}

function checkLimit(name: string, value: unknown): number {
  return value === undefined || value === Number.POSITIVE_INFINITY
    ? Number.POSITIVE_INFINITY
    : checkInteger(name, value, 1)
}

function checkBroker(broker: unknown): Broker {
  const b = broker as Record<string, unknown> | null
  for (const method of ['publish', 'replay', 'lastId', 'listen', 'unlisten', 'close']) {
    if (b === null || typeof b !== 'object' || typeof b[method] !== 'function') {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('broker', `must implement the Broker contract (missing ${method}())`)
    }
  }
  return b as unknown as Broker
}

/** Printable ASCII needs no decoding; anything else may be UTF-8 bytes read as Latin-1. */
const NON_ASCII = /[^\x20-\x7e]/
const UTF8 = new TextDecoder('utf-8', { fatal: true })

function isSource(value: unknown): value is SseSource {
  return value !== null && typeof value === 'object' && (Symbol.asyncIterator in value || Symbol.iterator in value)
}

/**
 * `Last-Event-ID` from the header (a browser sends its UTF-8 bytes, Node reads
 * them as Latin-1) or, for clients that cannot set headers, the `lastEventId`
 * query parameter. The header wins: an EventSource sends it on reconnects, so
 * it is newer than a query parameter fixed when the page was rendered.
 */
function lastEventIdOf(request: FastifyRequest): string | null {
  const header = request.headers['last-event-id']
  if (typeof header === 'string') {
    if (!NON_ASCII.test(header)) return header
    try {
      return UTF8.decode(Buffer.from(header, 'latin1'))
    } catch {
      return header
    }
  }
  // From the URL itself: a route's querystring schema may strip parameters it does not list.
  const url = request.raw.url ?? ''
  const q = url.indexOf('?')
  return q === -1 ? null : new URLSearchParams(url.slice(q + 1)).get('lastEventId')
}

/** The response can no longer carry a stream: the client left (HTTP/1 socket closed, HTTP/2 stream reset). */
function isGone(res: FastifyReply['raw']): boolean {
  return (
    res.destroyed === true ||
    res.writableEnded ||
    (res as { stream?: { destroyed?: boolean } }).stream?.destroyed === true
  )
}

/** A `transaction` option: undefined, or a client for a broker that takes one. */
function checkTransaction(broker: Broker, transaction: unknown): TransactionClient | undefined {
  if (transaction === undefined) return undefined
  if (broker.transactional !== true) {
    throw new FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED(
      'this broker cannot publish inside a transaction (only postgresBroker can); publish after the commit, or use fastify-html-sse/postgres'
    )
  }
  const query = (transaction as { query?: unknown } | null)?.query
  if (transaction === null || typeof transaction !== 'object' || typeof query !== 'function') {
    throw new FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED(
      `options.transaction must be a database client inside an open transaction, got ${describe(transaction)}`
    )
  }
  return transaction as TransactionClient
}

/** The request asks for an event stream (an EventSource, htmx-ext-sse and htmx 4's hx-sse all say so). */
function acceptsEventStream(request: FastifyRequest): boolean {
  const accept = request.headers.accept
  return typeof accept === 'string' && accept.includes('text/event-stream')
}

/** What the broker is told besides the frame: only the fields given. */
function publishOptions(transaction: TransactionClient | undefined, key: string | undefined): BrokerPublishOptions {
  const options: BrokerPublishOptions = {}
  if (transaction !== undefined) options.transaction = transaction
  if (key !== undefined) options.key = key
  return options
}

/** An `expiresAt` option as epoch ms: a valid `Date` or a non-negative safe integer. */
function checkExpiresAt(value: unknown): number {
  const ms = value instanceof Date ? value.getTime() : value
  if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 0) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('expiresAt', `must be a valid Date or epoch ms, got ${describe(value)}`)
  }
  // Epoch 0 would read as "none": a time in the past, as any other.
  return ms === 0 ? 1 : ms
}

/** Closes the HTTP/2 session a response belongs to (a no-op over HTTP/1). */
export function closeSessionOf(res: FastifyReply['raw']): void {
  ;(res as { stream?: { session?: { close(): void } | undefined } | undefined }).stream?.session?.close()
}

const defaultClientKey = (request: FastifyRequest): string => request.ip

async function htmlSse(app: FastifyInstance, options: HtmlSseOptions): Promise<void> {
  if (registered.has(app.server)) throw new FST_ERR_HTML_SSE_REGISTERED_TWICE()
  const heartbeatMs = checkInteger('heartbeatMs', options.heartbeatMs ?? 15_000, 0, MAX_TIMER_MS)
  const retryMs = options.retryMs === undefined ? undefined : checkInteger('retryMs', options.retryMs, 0)
  const maxBufferedBytes = checkInteger('maxBufferedBytes', options.maxBufferedBytes ?? 1024 * 1024, 1)
  const replay = checkReplay(options.replay ?? 1000)
  const broker = options.broker === undefined ? memoryBroker({ replay }) : checkBroker(options.broker)
  const assetsPrefix = options.assetsPrefix ?? DEFAULT_ASSETS_PREFIX
  if (assetsPrefix !== false && (typeof assetsPrefix !== 'string' || !/^\/(.*\/)?$/.test(assetsPrefix))) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('assetsPrefix', 'must be false or a path that starts and ends with "/"')
  }
  const maxConnections = checkLimit('maxConnections', options.maxConnections)
  const maxPerClient = checkLimit('maxConnectionsPerClient', options.maxConnectionsPerClient)
  const clientKey = options.clientKey ?? defaultClientKey
  if (typeof clientKey !== 'function') {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('clientKey', 'must be a function of the request returning a string')
  }
  const maxLifetimeMs = checkInteger('maxLifetimeMs', options.maxLifetimeMs ?? 0, 0, MAX_TIMER_MS)
  const drainMs = checkInteger('drainMs', options.drainMs ?? 5000, 0, MAX_TIMER_MS)
  const writeTimeoutMs = checkInteger('writeTimeoutMs', options.writeTimeoutMs ?? 30_000, 0, MAX_TIMER_MS)
  // A named event without data: an EventSource applies `retry:` and dispatches nothing, and
  // htmx 4's hx-sse, which reads `retry:` only from an event with data or a name, applies it too.
  const openFrame = retryMs === undefined ? null : retryFrame(retryMs)
  registered.add(app.server)

  const metrics = await loadMetrics()
  const hub = new Hub(broker, app.log, metrics, {
    heartbeatMs,
    maxBufferedBytes,
    writeTimeoutMs,
    resumeRetryMs: RECONNECT_SPREAD_MS
  })
  broker.useLogger?.(app.log)
  await broker.listen(hub.deliver, hub.gap)
  brokerUsers.set(broker, (brokerUsers.get(broker) ?? 0) + 1)

  /**
   * Refuses a stream past a limit. An SSE client (its `Accept` names
   * `text/event-stream`) gets an event stream that carries only a `retry:` hint
   * drawn from a window and ends: every client turns that into a timed
   * reconnect that keeps its place (an EventSource and htmx-ext-sse reconnect
   * with their Last-Event-ID, htmx 4's `hx-sse` retries a stream it has), while
   * a 503/429 status ends an EventSource and an htmx 4 stream for good, and
   * browsers ignore `Retry-After`. Other clients get `status` with a randomised
   * `Retry-After`. Either way the connection closes after the answer.
   */
  function refuse(reply: FastifyReply, status: 429 | 503, reason: RefuseReason): void {
    hub.refused++
    metrics.refused(reason)
    if (acceptsEventStream(reply.request)) {
      endAtOnce(reply, REFUSED_RETRY_MIN_MS + Math.floor(Math.random() * (REFUSED_RETRY_SPREAD_MS + 1)))
      return
    }
    reply
      .code(status)
      .header('retry-after', String(RETRY_AFTER_MIN_S + Math.floor(Math.random() * RETRY_AFTER_SPREAD_S)))
    // HTTP/2 has no connection header: the stream ends with the answer.
    if (reply.request.raw.httpVersionMajor < 2) reply.header('connection', 'close')
    reply
      .type('text/plain; charset=utf-8')
      .send(status === 503 ? 'too many event streams on this server' : 'too many event streams from this client')
  }

  /**
   * Answers with an event stream that carries only a `retry:` hint of `ms` and
   * ends, and lets its connection go: over HTTP/1 the head says
   * `connection: close`, so no idle keep-alive socket is left behind (one would
   * hold `app.close()`); over HTTP/2, during shutdown, the session is closed.
   */
  function endAtOnce(reply: FastifyReply, ms: number): void {
    writeHead(reply, true)
    reply.raw.end(retryFrame(ms))
    if (hub.closing) closeSessionOf(reply.raw)
  }

  /** Writes the stream's head, hooks' headers kept; `last`: the connection closes after this response. */
  function writeHead(reply: FastifyReply, last = false): void {
    // Write the head ourselves (see sink.ts for why the reply is hijacked).
    reply.hijack()
    const head: OutgoingHttpHeaders = {
      ...(reply.getHeaders() as OutgoingHttpHeaders),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      // nginx and some other proxies buffer responses unless told not to.
      'x-accel-buffering': 'no'
    }
    // HTTP/2 has no connection header.
    if (last && reply.request.raw.httpVersionMajor < 2)
      head.connection = 'close'
      // Both HTTP/1 and HTTP/2 responses take (status, headers).
    ;(reply.raw as ServerResponse).writeHead(200, head)
  }

  app.decorateReply(kSink, null)
  app.decorateReply('sse', function sse(this: FastifyReply, a?: unknown, b?: unknown): SseSink {
    const existing = (this as unknown as Record<symbol, SseSink | null>)[kSink] as SseSink | null
    if (existing !== null) return existing
    let source: SseSource | SseSourceFactory | undefined
    let opts: SseReplyOptions | undefined
    if (isSource(a) || typeof a === 'function') {
      source = a as SseSource | SseSourceFactory
      opts = b as SseReplyOptions | undefined
    } else if (a === undefined || (a !== null && typeof a === 'object')) {
      opts = a as SseReplyOptions | undefined
      if (b !== undefined) throw new FST_ERR_HTML_SSE_SOURCE_INVALID(describe(a))
    } else {
      throw new FST_ERR_HTML_SSE_SOURCE_INVALID(describe(a))
    }
    const topics = opts?.topics ?? []
    if (!Array.isArray(topics)) throw new FST_ERR_HTML_SSE_OPTION_INVALID('topics', 'must be an array of topic names')
    for (const topic of topics) checkTopic(topic)
    const member = opts?.member
    if (member !== undefined) checkName('member', member)
    const expiresAt = opts?.expiresAt === undefined ? 0 : checkExpiresAt(opts.expiresAt)
    const lifetime =
      opts?.maxLifetimeMs === undefined
        ? maxLifetimeMs
        : checkInteger('maxLifetimeMs', opts.maxLifetimeMs, 0, MAX_TIMER_MS)
    const request = this.request
    const lastEventId = lastEventIdOf(request)
    const res = this.raw
    const closedSink = (): SseSink => {
      // The route may have made an iterator that holds something (a listener, a stream): let it go.
      if (source !== undefined && typeof source !== 'function') release(source, this.log)
      const closed = new ClosedSink(lastEventId)
      ;(this as unknown as Record<symbol, SseSink | null>)[kSink] = closed
      return closed
    }

    // The client left while the handler was awaiting: no stream, no source.
    if (isGone(res)) {
      this.hijack()
      return closedSink()
    }
    // A health check or a load balancer probing the route: the head, no body.
    if (request.method === 'HEAD') {
      writeHead(this)
      res.end()
      return closedSink()
    }
    // Shutdown began while the handler was awaiting: tell the client where to go and end.
    if (hub.closing) {
      endAtOnce(this, Math.floor(Math.random() * (drainMs + 1)))
      return closedSink()
    }
    if (hub.sinks.size >= maxConnections) {
      refuse(this, 503, 'max_connections')
      return closedSink()
    }
    let key: string | null = null
    if (maxPerClient !== Number.POSITIVE_INFINITY) {
      key = String(clientKey(request))
      if (hub.clientCount(key) >= maxPerClient) {
        refuse(this, 429, 'max_connections_per_client')
        return closedSink()
      }
    }

    writeHead(this)
    // Send the head now, so the client's `open` fires before the first event.
    res.flushHeaders()
    const sink = new Sink(res, this.log, hub, lastEventId, member ?? null)
    sink.clientKey = key
    ;(this as unknown as Record<symbol, SseSink | null>)[kSink] = sink
    hub.add(sink)
    if (openFrame !== null) sink.sendFrame(openFrame)
    hub.open(sink, topics)
    if (lifetime > 0) sink.expireAfter(lifetime - Math.floor(Math.random() * lifetime * 0.1), RECONNECT_SPREAD_MS)
    if (expiresAt !== 0) sink.expireAt(expiresAt)
    if (source !== undefined) void sink.pump(source)
    return sink
  })

  app.decorate('sse', {
    async publish(topic: string, html: Html, event: string = 'message', options?: PublishOptions): Promise<string> {
      checkTopic(topic)
      if ((options as SseMessageOptions | undefined)?.id !== undefined) throw new FST_ERR_HTML_SSE_PUBLISH_ID()
      if (options?.retry !== undefined) checkRetry(options.retry)
      const transaction = checkTransaction(broker, options?.transaction)
      const key = options?.key
      if (key !== undefined) checkName('key', key)
      const body = frameBody(isThenable(html) ? await html : html, event, options?.retry)
      const id = await (transaction === undefined && key === undefined
        ? broker.publish(topic, body)
        : broker.publish(topic, body, publishOptions(transaction, key)))
      hub.published++
      metrics.published()
      if (hub.pressure) {
        // Some socket is over its high-water mark: let I/O run before the next
        // publish of a burst, so a client that keeps reading is never shed.
        hub.pressure = false
        await new Promise((resolve) => setImmediate(resolve))
      }
      return id
    },
    async lastId(options?: LastIdOptions): Promise<string | null> {
      const transaction = checkTransaction(broker, options?.transaction)
      return transaction === undefined ? broker.lastId() : broker.lastId({ transaction })
    },
    stats: () => hub.stats(),
    presence: (topic: string) => hub.presence(topic),
    async disconnect(filter: DisconnectFilter): Promise<void> {
      const { member, topic } = (filter ?? {}) as DisconnectFilter
      if (member === undefined && topic === undefined) {
        throw new FST_ERR_HTML_SSE_OPTION_INVALID('disconnect', 'takes { member } or { topic } or both, got neither')
      }
      if (member !== undefined) checkName('member', member)
      if (topic !== undefined) checkTopic(topic)
      const clean: DisconnectFilter = {}
      if (member !== undefined) clean.member = member
      if (topic !== undefined) clean.topic = topic
      // Through the log, so every instance ends its matching streams, this one included.
      await broker.publish(CONTROL_TOPIC, controlBody({ type: 'disconnect', filter: clean }))
    }
  } satisfies SseHub)

  if (assetsPrefix !== false) serveAssets(app, assetsPrefix)

  // Close streams before the server stops accepting, so app.close() never waits on them.
  app.addHook('preClose', (done) => {
    hub.close(drainMs)
    done()
  })
  app.addHook('onClose', async () => {
    hub.close(drainMs)
    await hub.withdrawn
    registered.delete(app.server)
    await broker.unlisten(hub.deliver)
    const users = (brokerUsers.get(broker) ?? 1) - 1
    if (users > 0) brokerUsers.set(broker, users)
    else {
      brokerUsers.delete(broker)
      await broker.close()
    }
  })
}

/**
 * Streams HTML over Server-Sent Events: `reply.sse()` per request, and
 * `app.sse.publish()` to topics shared by many streams and instances.
 *
 * @example
 * ```tsx
 * await app.register(htmlSse, { heartbeatMs: 15_000 })
 * app.get('/events', (req, reply) => {
 *   reply.sse(ticks())
 * })
 * ```
 */
export const fastifyHtmlSse = fp(htmlSse, { fastify: '5.x', name: 'fastify-html-sse' })
export default fastifyHtmlSse
