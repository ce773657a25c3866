/**
 * Opening a stream: what `reply.sse()` does with its arguments, and the answer
 * each request gets: a stream, the head alone (HEAD), nothing (the client
 * left), a hint to come back (shutdown, or refused past a limit).
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ClosedSink } from './closed-sink.js'
import type { Config } from './config.js'
import type { Counters } from './counters.js'
import { FST_ERR_HTML_SSE_SOURCE_INVALID } from './errors.js'
import { retryFrame } from './frame.js'
import type { Hub } from './hub.js'
import type { RefuseReason } from './metrics.js'
import { isSource, release } from './pump.js'
import { Sink, sessionOf } from './sink.js'
import type { SseSink, SseSource, SseSourceFactory } from './types.js'
import { checkExpiresAt, checkMs, checkName, checkTopics, describe } from './validate.js'

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

/** A refused client is told to come back after 2 to 10 s, so refused clients do not return in lockstep. */
const RETRY_AFTER_MIN_S = 2
const RETRY_AFTER_SPREAD_S = 9
/** A refused SSE client's `retry:` hint is drawn from [1 s, 5 s]: spread, and soon enough for a page. */
const REFUSED_RETRY_MIN_MS = 1000
const REFUSED_RETRY_SPREAD_MS = 4000
/** The `retry:` hint at the end of a lifetime, or after a failed resume, is drawn from `[0, this)`. */
export const RECONNECT_SPREAD_MS = 1000

/** Printable ASCII needs no decoding; anything else may be UTF-8 bytes read as Latin-1. */
const NON_ASCII = /[^\x20-\x7e]/
const UTF8 = new TextDecoder('utf-8', { fatal: true })

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

/** The request asks for an event stream (an EventSource, htmx-ext-sse and htmx 4's hx-sse all say so). */
function acceptsEventStream(request: FastifyRequest): boolean {
  const accept = request.headers.accept
  return typeof accept === 'string' && accept.includes('text/event-stream')
}

/** `reply.sse()`'s arguments sorted: `(source?, options?)` or `(options)`. */
function argumentsOf(
  a: unknown,
  b: unknown
): { source: SseSource | SseSourceFactory | undefined; options: SseReplyOptions } {
  if (isSource(a) || typeof a === 'function') {
    return { source: a as SseSource | SseSourceFactory, options: (b ?? {}) as SseReplyOptions }
  }
  if ((a === undefined || (a !== null && typeof a === 'object')) && b === undefined) {
    return { source: undefined, options: (a ?? {}) as SseReplyOptions }
  }
  throw new FST_ERR_HTML_SSE_SOURCE_INVALID(describe(a))
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
  if (last && reply.request.raw.httpVersionMajor < 2) {
    head.connection = 'close'
  }
  // Both HTTP/1 and HTTP/2 responses take (status, headers).
  ;(reply.raw as ServerResponse).writeHead(200, head)
}

/**
 * Opens streams for one app: `open(reply, a, b)` is `reply.sse(a, b)` (once
 * per reply: the plugin keeps the sink it returns).
 */
export class Opener {
  readonly #config: Readonly<Config>
  readonly #hub: Hub
  readonly #counters: Counters
  /** A named retry event: an EventSource and htmx 4 both apply it (see `retryFrame`). */
  readonly #openFrame: string | null

  constructor(config: Readonly<Config>, hub: Hub, counters: Counters) {
    this.#config = config
    this.#hub = hub
    this.#counters = counters
    this.#openFrame = config.retryMs === undefined ? null : retryFrame(config.retryMs)
  }

  open(reply: FastifyReply, a: unknown, b: unknown): SseSink {
    const { source, options } = argumentsOf(a, b)
    const topics = checkTopics(options.topics ?? [])
    const member = options.member === undefined ? null : options.member
    if (member !== null) checkName('member', member)
    const expiresAt = options.expiresAt === undefined ? 0 : checkExpiresAt(options.expiresAt)
    const lifetime =
      options.maxLifetimeMs === undefined ? this.#config.maxLifetimeMs : checkMs('maxLifetimeMs', options.maxLifetimeMs)
    const request = reply.request
    const lastEventId = lastEventIdOf(request)
    const res = reply.raw
    const closedSink = (): SseSink => {
      // The route may have made an iterator that holds something (a listener, a stream): let it go.
      if (source !== undefined && typeof source !== 'function') release(source, reply.log)
      return new ClosedSink(lastEventId)
    }

    // The client left while the handler was awaiting: no stream, no source.
    if (isGone(res)) {
      reply.hijack()
      return closedSink()
    }
    // A health check or a load balancer probing the route: the head, no body.
    if (request.method === 'HEAD') {
      writeHead(reply)
      res.end()
      return closedSink()
    }
    // Shutdown began while the handler was awaiting: tell the client where to go and end.
    if (this.#hub.closing) {
      this.#endAtOnce(reply, Math.floor(Math.random() * (this.#config.drainMs + 1)))
      return closedSink()
    }
    if (this.#hub.size >= this.#config.maxConnections) {
      this.#refuse(reply, 503, 'max_connections')
      return closedSink()
    }
    let clientKey: string | null = null
    if (this.#config.maxConnectionsPerClient !== Number.POSITIVE_INFINITY) {
      clientKey = String(this.#config.clientKey(request))
      if (this.#hub.clientCount(clientKey) >= this.#config.maxConnectionsPerClient) {
        this.#refuse(reply, 429, 'max_connections_per_client')
        return closedSink()
      }
    }

    writeHead(reply)
    // Send the head now, so the client's `open` fires before the first event.
    res.flushHeaders()
    const sink = new Sink(res, reply.log, this.#hub, { lastEventId, member, clientKey })
    if (this.#openFrame !== null) sink.sendFrame(this.#openFrame)
    this.#hub.add(sink, topics)
    if (lifetime > 0) sink.expireAfter(lifetime - Math.floor(Math.random() * lifetime * 0.1), RECONNECT_SPREAD_MS)
    if (expiresAt !== 0) sink.expireAt(expiresAt)
    if (source !== undefined) void sink.pump(source)
    return sink
  }

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
  #refuse(reply: FastifyReply, status: 429 | 503, reason: RefuseReason): void {
    this.#counters.refused(reason)
    if (acceptsEventStream(reply.request)) {
      this.#endAtOnce(reply, REFUSED_RETRY_MIN_MS + Math.floor(Math.random() * (REFUSED_RETRY_SPREAD_MS + 1)))
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
  #endAtOnce(reply: FastifyReply, ms: number): void {
    writeHead(reply, true)
    reply.raw.end(retryFrame(ms))
    if (this.#hub.closing) sessionOf(reply.raw)?.close()
  }
}
