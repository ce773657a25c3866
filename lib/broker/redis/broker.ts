/**
 * The Redis broker: one Redis Stream (`<prefix>log`) is the ordered log that
 * serves both live delivery and replay, so every instance sees the same events
 * in the same order and a browser may resume on any instance. This file ties
 * the parts together and publishes; each concern has its own file:
 * `options.ts`, `connection.ts` (ownership, health, command timeouts),
 * `reader.ts` (read loop, gap detection), `replay.ts` (the queries a resume
 * asks), `reply.ts` (decoding), `presence.ts` (who is there, per topic, across
 * instances). What it shares with the PostgreSQL broker is in `../shared/`: the
 * lifecycle, the listeners and their pacing, the recent window, the resume
 * decisions, deadlines and backoff.
 *
 * An entry holds the topic (`t`), the frame's body (`b`) and, for a keyed
 * event, its key (`k`); the key comes back on the event live, from the window
 * and from `XRANGE` alike, and the hub drops superseded keyed events from a
 * replay. Control entries (`disconnect()`) are entries of the topic '' and
 * travel the same way.
 */
import { checkName } from '../../validate.js'
import { LogBroker } from '../shared/broker.js'
import { Replays } from '../shared/replays.js'
import { unavailable } from '../shared/timing.js'
import { RecentWindow } from '../shared/window.js'
import type { Broker, BrokerPublishOptions, BrokerReplay, Presence, PresenceShare } from '../types.js'
import { compareIds } from '../types.js'
import { Connections } from './connection.js'
import type { RedisBrokerLogger, RedisBrokerOptions } from './options.js'
import { resolveOptions } from './options.js'
import { PresenceStore } from './presence.js'
import { StreamReader } from './reader.js'
import { StreamQueries } from './replay.js'
import { text } from './reply.js'

/** The broker `redisBroker` returns. */
export interface RedisBroker extends Broker {
  /** Reports outages to `logger` unless the `logger` option was given (the plugin calls this with `app.log`). */
  useLogger(logger: RedisBrokerLogger): void
  /** Every `sharePresence` call renews all of the instance's shares: the hub renews with an empty map. */
  readonly presenceRenewal: true
  /**
   * Renews this instance and replaces its shares of the topics in `shares`: see `presence.ts` for the cost in commands.
   * Resolves false when the instance was not live before (the hub then shares every topic again).
   */
  sharePresence(instance: string, shares: ReadonlyMap<string, PresenceShare | null>, ttlMs: number): Promise<boolean>
  /** A topic's presence across every instance sharing the prefix: `TIME`, `HGETALL` and `ZRANGE` of the instances. */
  presence(topic: string): Promise<Presence>
}

class RedisStreamBroker extends LogBroker implements RedisBroker {
  readonly presenceRenewal = true
  readonly #options: ReturnType<typeof resolveOptions>
  readonly #conns: Connections
  readonly #reader: StreamReader
  readonly #replays: Replays
  readonly #presence: PresenceStore
  /** The newest id this instance published: with the reader's position, where trimming is measured from. */
  #published = '0-0'

  constructor(options: RedisBrokerOptions) {
    const resolved = resolveOptions(options)
    super(resolved.logger, 'FST_HTML_SSE_REDIS')
    this.#options = resolved
    this.#conns = new Connections(resolved, this.logger)
    const window = RecentWindow.forReplay(resolved.replay)
    this.#reader = new StreamReader(this.#conns, resolved, window, this.listeners, this.logger)
    this.#replays = new Replays(new StreamQueries(this.#conns, this.#reader, window, resolved))
    this.#presence = new PresenceStore(this.#conns, resolved)
  }

  async publish(topic: string, body: string, options?: BrokerPublishOptions): Promise<string> {
    const key = options?.key
    if (key !== undefined) checkName('key', key)
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

  async replay(topics: readonly string[], lastId: string): Promise<BrokerReplay> {
    this.checkOpen()
    return this.#replays.replay(topics, lastId)
  }

  async lastId(): Promise<string | null> {
    this.checkOpen()
    return this.#replays.lastId(this.#published)
  }

  async sharePresence(
    instance: string,
    shares: ReadonlyMap<string, PresenceShare | null>,
    ttlMs: number
  ): Promise<boolean> {
    this.checkOpen()
    return this.#presence.share(instance, shares, ttlMs)
  }

  async presence(topic: string): Promise<Presence> {
    this.checkOpen()
    return this.#presence.presence(topic)
  }

  /** The command connection is made now too, so publishing never waits on a first connect. */
  protected async start(): Promise<void> {
    await Promise.all([this.#reader.start(), this.#conns.commands()])
  }

  protected async shutdown(): Promise<void> {
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
