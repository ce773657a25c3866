/**
 * The Fastify plugin: option checks, the `reply.sse()` and `app.sse`
 * decorators, the client files, and the hooks that close every stream.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { DEFAULT_ASSETS_PREFIX, serveAssets } from './assets.js'
import { checkReplay, memoryBroker } from './broker/memory.js'
import type { Broker } from './broker/types.js'
import {
  FST_ERR_HTML_SSE_OPTION_INVALID,
  FST_ERR_HTML_SSE_PUBLISH_ID,
  FST_ERR_HTML_SSE_SOURCE_INVALID
} from './errors.js'
import { checkRetry, describe, frameBody, type Html, isThenable, type SseMessageOptions } from './frame.js'
import { checkTopic, Hub, type SseStats } from './hub.js'
import { Sink, type SseSink, type SseSource, type SseSourceFactory } from './sink.js'

/** Options of the plugin. */
export interface HtmlSseOptions {
  /** A comment line (`:\n`) on each stream idle this long, in ms; 0 turns heartbeats off. @default 15000 */
  heartbeatMs?: number
  /** Sends `retry:` with this many ms when a stream opens. @default undefined */
  retryMs?: number
  /** How many recent events the default broker keeps for `Last-Event-ID` resume; 0 keeps none. @default 1000 */
  replay?: number
  /** A stream whose unsent bytes pass this is closed; its browser reconnects and resumes. @default 1048576 */
  maxBufferedBytes?: number
  /** Where published events travel. @default memoryBroker({ replay }) */
  broker?: Broker
  /** Where the htmx client files are served; `false` serves none. @default '/fastify-html-sse/' */
  assetsPrefix?: string | false
}

/** Options of `reply.sse()`. */
export interface SseReplyOptions {
  /** Topics this stream subscribes to; with `Last-Event-ID`, what it missed of them comes first. */
  topics?: readonly string[]
}

/** Options of `app.sse.publish()`. */
export type PublishOptions = Omit<SseMessageOptions, 'id'>

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
   * The newest id in the broker's log, or null when it is empty. Render a page's
   * state, take `lastId()`, and pass it to `<SseSource lastEventId>`: the stream's
   * first connection resumes from it, so nothing published in between is lost.
   */
  lastId(): Promise<string | null>
  /** Open streams, subscribers per topic, events published, streams dropped. */
  stats(): SseStats
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

function checkInteger(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID(name, `must be an integer from ${min} to ${max}, got ${String(value)}`)
  }
  return value as number
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
 * query parameter.
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
  const query = request.query as Record<string, unknown> | null | undefined
  const fromQuery = query?.lastEventId
  if (typeof fromQuery === 'string') return fromQuery
  if (Array.isArray(fromQuery) && typeof fromQuery[0] === 'string') return fromQuery[0]
  return null
}

async function htmlSse(app: FastifyInstance, options: HtmlSseOptions): Promise<void> {
  const heartbeatMs = checkInteger('heartbeatMs', options.heartbeatMs ?? 15_000, 0, MAX_TIMER_MS)
  const retryMs = options.retryMs === undefined ? undefined : checkInteger('retryMs', options.retryMs, 0)
  const maxBufferedBytes = checkInteger('maxBufferedBytes', options.maxBufferedBytes ?? 1024 * 1024, 1)
  const replay = checkReplay(options.replay ?? 1000)
  const broker = options.broker === undefined ? memoryBroker({ replay }) : checkBroker(options.broker)
  const assetsPrefix = options.assetsPrefix ?? DEFAULT_ASSETS_PREFIX
  if (assetsPrefix !== false && (typeof assetsPrefix !== 'string' || !/^\/(.*\/)?$/.test(assetsPrefix))) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('assetsPrefix', 'must be false or a path that starts and ends with "/"')
  }
  const retryFrame = retryMs === undefined ? null : `retry: ${retryMs}\n\n`

  const hub = new Hub(broker, app.log, heartbeatMs)
  broker.useLogger?.(app.log)
  await broker.listen(hub.deliver)

  app.decorateReply(kSink, null)
  app.decorateReply('sse', function sse(this: FastifyReply, a?: unknown, b?: unknown): SseSink {
    const existing = (this as unknown as Record<symbol, Sink | null>)[kSink] as Sink | null
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

    // Write the head ourselves (see sink.ts for why the reply is hijacked); headers
    // that hooks or CORS set on the reply are kept.
    this.hijack()
    const res = this.raw
    const head: OutgoingHttpHeaders = {
      ...(this.getHeaders() as OutgoingHttpHeaders),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      // nginx and some other proxies buffer responses unless told not to.
      'x-accel-buffering': 'no'
    }
    // Both HTTP/1 and HTTP/2 responses take (status, headers).
    ;(res as ServerResponse).writeHead(200, head)
    // Send the head now, so the client's `open` fires before the first event.
    res.flushHeaders()

    const sink = new Sink(res, this.log, hub, maxBufferedBytes, lastEventIdOf(this.request))
    ;(this as unknown as Record<symbol, Sink | null>)[kSink] = sink
    hub.add(sink)
    if (retryFrame !== null) sink.sendFrame(retryFrame)
    hub.open(sink, topics)
    if (source !== undefined) void sink.pump(typeof source === 'function' ? source(sink) : source)
    return sink
  })

  app.decorate('sse', {
    async publish(topic: string, html: Html, event: string = 'message', options?: PublishOptions): Promise<string> {
      checkTopic(topic)
      if ((options as SseMessageOptions | undefined)?.id !== undefined) throw new FST_ERR_HTML_SSE_PUBLISH_ID()
      if (options?.retry !== undefined) checkRetry(options.retry)
      const body = frameBody(isThenable(html) ? await html : html, event, options?.retry)
      const id = await broker.publish(topic, body)
      hub.published++
      if (hub.pressure) {
        // Some socket is over its high-water mark: let I/O run before the next
        // publish of a burst, so a client that keeps reading is never shed.
        hub.pressure = false
        await new Promise((resolve) => setImmediate(resolve))
      }
      return id
    },
    lastId: () => broker.lastId(),
    stats: () => hub.stats()
  } satisfies SseHub)

  if (assetsPrefix !== false) serveAssets(app, assetsPrefix)

  // Close streams before the server stops accepting, so app.close() never waits on them.
  app.addHook('preClose', (done) => {
    hub.close()
    done()
  })
  app.addHook('onClose', async () => {
    hub.close()
    await broker.unlisten(hub.deliver)
    await broker.close()
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
