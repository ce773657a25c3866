/**
 * The Fastify plugin: registration, the `reply.sse()` and `app.sse`
 * decorators, the client files, and the hooks that close every stream.
 * Options are resolved in `config.ts`, streams opened in `open.ts`, and
 * delivered by the hub (`hub.ts`).
 */
import type { FastifyInstance, FastifyReply } from 'fastify'
import fp from 'fastify-plugin'
import { serveAssets } from './assets.js'
import { type BrokerPublishOptions, CONTROL_TOPIC, type Presence, type TransactionClient } from './broker/types.js'
import { type HtmlSseOptions, resolveConfig } from './config.js'
import { controlBody, type DisconnectFilter } from './control.js'
import { Counters, type SseStats } from './counters.js'
import {
  FST_ERR_HTML_SSE_OPTION_INVALID,
  FST_ERR_HTML_SSE_PUBLISH_ID,
  FST_ERR_HTML_SSE_REGISTERED_TWICE
} from './errors.js'
import { checkRetry, frameBody, type Html, type SseMessageOptions } from './frame.js'
import { Hub } from './hub.js'
import { loadMetrics } from './metrics.js'
import { Opener, RECONNECT_SPREAD_MS, type SseReplyOptions } from './open.js'
import type { SseSink, SseSource, SseSourceFactory } from './types.js'
import { checkName, checkTopic, checkTransaction, isThenable } from './validate.js'

export type { HtmlSseOptions } from './config.js'
export type { SseReplyOptions } from './open.js'

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
   * event (null only from a broker that has none). Take `lastId()`, then read the
   * page's state, and pass the id to `<SseSource lastEventId>`: the stream's first
   * connection resumes from it, so nothing published in between is lost (an item
   * may come twice: swap whole lists or keyed items). With the Postgres broker,
   * `lastId({ transaction })` in the REPEATABLE READ transaction that reads the
   * state gives both from one snapshot: nothing lost, nothing twice.
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

/** Servers the plugin is registered on: a second registration is a mistake. */
const registered = new WeakSet<object>()

/** What the broker is told besides the frame: only the fields given. */
function publishOptions(transaction: TransactionClient | undefined, key: string | undefined): BrokerPublishOptions {
  const options: BrokerPublishOptions = {}
  if (transaction !== undefined) options.transaction = transaction
  if (key !== undefined) options.key = key
  return options
}

async function htmlSse(app: FastifyInstance, options: HtmlSseOptions): Promise<void> {
  if (registered.has(app.server)) throw new FST_ERR_HTML_SSE_REGISTERED_TWICE()
  const config = resolveConfig(options)
  const { broker, drainMs } = config
  registered.add(app.server)

  const counters = new Counters(await loadMetrics())
  const hub = new Hub(broker, app.log, counters, {
    heartbeatMs: config.heartbeatMs,
    maxBufferedBytes: config.maxBufferedBytes,
    writeTimeoutMs: config.writeTimeoutMs,
    resumeRetryMs: RECONNECT_SPREAD_MS
  })
  broker.useLogger?.(app.log)
  await broker.listen(hub.deliver, hub.gap)
  const opener = new Opener(config, hub, counters)

  app.decorateReply(kSink, null)
  app.decorateReply('sse', function sse(this: FastifyReply, a?: unknown, b?: unknown): SseSink {
    const slot = this as unknown as Record<symbol, SseSink | null>
    const existing = slot[kSink]
    if (existing !== null && existing !== undefined) return existing
    const sink = opener.open(this, a, b)
    slot[kSink] = sink
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
      counters.published()
      // Some socket is over its high-water mark: let I/O run before the next
      // publish of a burst, so a client that keeps reading is never shed.
      if (hub.takePressure()) await new Promise((resolve) => setImmediate(resolve))
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
      const clean: DisconnectFilter = {}
      if (member !== undefined) {
        checkName('member', member)
        clean.member = member
      }
      if (topic !== undefined) {
        checkTopic(topic)
        clean.topic = topic
      }
      // Through the log, so every instance ends its matching streams, this one included.
      await broker.publish(CONTROL_TOPIC, controlBody({ type: 'disconnect', filter: clean }))
    }
  } satisfies SseHub)

  if (config.assetsPrefix !== false) serveAssets(app, config.assetsPrefix)

  // Close streams before the server stops accepting, so app.close() never waits on them.
  let withdrawn: Promise<void> | null = null
  // The plugin's use of the broker ends here too (presence taken back, delivery stopped), before
  // any onClose hook: an app that closes its broker in one finds the plugin done with it.
  const finish = async (): Promise<void> => {
    withdrawn ??= hub.close(drainMs)
    await withdrawn
    await broker.unlisten(hub.deliver)
  }
  app.addHook('preClose', finish)
  app.addHook('onClose', async () => {
    await finish()
    registered.delete(app.server)
    // What the plugin made, it closes; a broker you passed is yours to close (after the app).
    if (config.ownBroker) await broker.close()
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
