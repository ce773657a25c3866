/**
 * The Redis broker: one Redis Stream (`<prefix>log`) is the ordered log that
 * serves both live delivery and replay, so every instance sees the same events
 * in the same order and a browser may resume on any instance. This file ties
 * the parts together and publishes; each concern has its own file:
 * `options.ts`, `connection.ts` (ownership, health, command timeouts),
 * `reader.ts` (read loop, pacing, gap detection), `replay.ts` (resume and the
 * newest id), `window.ts` (recent events in memory), `reply.ts` (decoding),
 * `presence.ts` (who is there, per topic, across instances).
 *
 * An entry holds the topic (`t`), the frame's body (`b`) and, for a keyed
 * event, its key (`k`); the key comes back on the event live, from the window
 * and from `XRANGE` alike, and the hub drops superseded keyed events from a
 * replay. Control entries (`disconnect()`) are entries of the topic '' and
 * travel the same way.
 */
import { FST_ERR_HTML_SSE_OPTION_INVALID } from '../../errors.js'
import type {
  Broker,
  BrokerGapListener,
  BrokerListener,
  BrokerLogger,
  BrokerPublishOptions,
  BrokerReplay,
  Presence,
  PresenceShare
} from '../types.js'
import { compareIds } from '../types.js'
import { Connections, unavailable } from './connection.js'
import type { RedisBrokerLogger, RedisBrokerOptions } from './options.js'
import { resolveOptions } from './options.js'
import { PresenceStore } from './presence.js'
import { StreamReader } from './reader.js'
import { Replays } from './replay.js'
import { text } from './reply.js'
import { RecentWindow } from './window.js'

/** The broker `redisBroker` returns. */
export interface RedisBroker extends Broker {
  /** Reports outages to `logger` unless the `logger` option was given (the plugin calls this with `app.log`). */
  useLogger(logger: RedisBrokerLogger): void
  /** Shares this instance's presence per topic: see `presence.ts` for the cost in commands. */
  sharePresence(instance: string, shares: ReadonlyMap<string, PresenceShare | null>, ttlMs: number): Promise<void>
  /** A topic's presence across every instance sharing the prefix: one `TIME` and one `HGETALL`. */
  presence(topic: string): Promise<Presence>
}

const processLogger: BrokerLogger = {
  info() {},
  warn(obj, msg) {
    process.emitWarning(msg, { code: 'FST_HTML_SSE_REDIS', detail: describeLog(obj) })
  },
  error(obj, msg) {
    process.emitWarning(msg, { code: 'FST_HTML_SSE_REDIS', detail: describeLog(obj) })
  }
}

function describeLog(obj: object): string {
  const err = (obj as { err?: unknown }).err
  return err instanceof Error ? err.message : ''
}

class RedisStreamBroker implements RedisBroker {
  readonly #options: ReturnType<typeof resolveOptions>
  readonly #conns: Connections
  readonly #reader: StreamReader
  readonly #replays: Replays
  readonly #presence: PresenceStore
  #log: RedisBrokerLogger
  #started: Promise<void> | null = null
  /** The newest id this instance published: with the reader's position, where trimming is measured from. */
  #published = '0-0'
  #closing: Promise<void> | null = null

  constructor(options: RedisBrokerOptions) {
    const resolved = resolveOptions(options)
    this.#options = resolved
    this.#log = resolved.logger ?? processLogger
    const log = () => this.#log
    this.#conns = new Connections(resolved, log)
    const window = new RecentWindow(resolved.replay === 0 ? 0 : resolved.replay + 1)
    this.#reader = new StreamReader(this.#conns, resolved, window, log)
    this.#replays = new Replays(this.#conns, this.#reader, window, resolved)
    this.#presence = new PresenceStore(this.#conns, resolved)
  }

  useLogger(logger: RedisBrokerLogger): void {
    if (this.#options.logger === undefined) this.#log = logger
  }

  async publish(topic: string, body: string, options?: BrokerPublishOptions): Promise<string> {
    const key = options?.key
    if (key !== undefined && (typeof key !== 'string' || key.length === 0)) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('key', 'must be a non-empty string')
    }
    const client = await this.#conns.commands()
    const args = ['XADD', this.#options.key]
    const newest = compareIds(this.#published, this.#reader.position) >= 0 ? this.#published : this.#reader.position
    // Measured on Redis's clock (ids), never this host's: a skewed clock cannot trim new entries.
    const minId = Number(newest.slice(0, newest.indexOf('-'))) - this.#options.retentionMs
    if (minId > 0) args.push('MINID', '~', String(minId))
    // A control entry has the topic '' like any other: no stream subscribes to it, the hubs read it.
    args.push('*', 't', topic, 'b', body)
    if (key !== undefined) args.push('k', key)
    const id = text(await this.#conns.send(client, args))
    if (id === undefined) throw unavailable(`Redis at ${this.#options.target} answered XADD without an id`)
    if (compareIds(id, this.#published) > 0) this.#published = id
    return id
  }

  replay(topics: readonly string[], lastId: string): Promise<BrokerReplay> {
    if (this.#closing !== null) return Promise.reject(unavailable('it is closed'))
    return this.#replays.replay(topics, lastId)
  }

  lastId(): Promise<string | null> {
    if (this.#closing !== null) return Promise.reject(unavailable('it is closed'))
    return this.#replays.lastId(this.#published)
  }

  sharePresence(instance: string, shares: ReadonlyMap<string, PresenceShare | null>, ttlMs: number): Promise<void> {
    if (this.#closing !== null) return Promise.reject(unavailable('it is closed'))
    return this.#presence.share(instance, shares, ttlMs)
  }

  presence(topic: string): Promise<Presence> {
    if (this.#closing !== null) return Promise.reject(unavailable('it is closed'))
    return this.#presence.presence(topic)
  }

  async listen(listener: BrokerListener, onGap?: BrokerGapListener): Promise<void> {
    if (this.#closing !== null) throw unavailable('it is closed')
    if (this.#started === null) {
      // The command connection is made now too, so publishing never waits on a first connect.
      const started = Promise.all([this.#reader.start(), this.#conns.commands()]).then(() => {})
      this.#started = started
      started.catch(() => {
        if (this.#started === started) this.#started = null
      })
    }
    await this.#started
    this.#reader.add(listener, onGap)
  }

  unlisten(listener: BrokerListener): Promise<void> {
    this.#reader.remove(listener)
    return Promise.resolve()
  }

  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#shutdown()
    return this.#closing
  }

  async #shutdown(): Promise<void> {
    await this.#reader.stop()
    await this.#conns.close()
  }
}

/**
 * A broker for several instances: topics are shared through a Redis Stream, so
 * a publish on any instance reaches the streams of every instance, and a
 * browser may resume its `Last-Event-ID` on any of them. Connections it creates
 * are closed with the app; a `client` you pass is left open. Every Redis
 * command is bounded by `commandTimeoutMs`; an instance that falls more than
 * `retentionMs` behind sends its streams a `reset` rather than skip events.
 *
 * @example
 * ```ts
 * import htmlSse from 'fastify-html-sse'
 * import { redisBroker } from 'fastify-html-sse/redis'
 *
 * await app.register(htmlSse, { broker: redisBroker({ url: 'redis://127.0.0.1:6379', prefix: 'chat:' }) })
 * ```
 */
export function redisBroker(options: RedisBrokerOptions = {}): RedisBroker {
  return new RedisStreamBroker(options)
}
