/**
 * The options of `redisBroker`, their defaults and their checks, and the part
 * of a node-redis client the broker uses.
 */
import { FST_ERR_HTML_SSE_OPTION_INVALID } from '../../errors.js'
import { type LogOptions, optionalMs, resolveLogOptions } from '../shared/options.js'
import type { BrokerLogger } from '../types.js'

/**
 * What the broker needs of a node-redis client (v5 or v6). A client from
 * `createClient()` fits.
 */
export interface RedisClient {
  /** The socket is open (connected or reconnecting). */
  readonly isOpen: boolean
  /** Connected and ready for commands. */
  readonly isReady: boolean
  /** The options it was made with: the broker's reader copies its socket options. */
  readonly options?: { readonly socket?: object } | undefined
  /** Sends a raw command; `timeout` drops it if it is still waiting to be written after that many ms. */
  sendCommand(args: string[], options?: { timeout?: number }): Promise<unknown>
  /** A batch of raw commands written at once (`execAsPipeline`, no MULTI); without it, one `sendCommand` each. */
  multi?(): RedisPipeline
  /** A new client with the same options: the broker's own connection for the blocking read. */
  duplicate(overrides?: { disableOfflineQueue?: boolean; socket?: object }): RedisClient
  connect(): Promise<unknown>
  /** Closes after pending replies. */
  close(): Promise<unknown>
  /** Closes at once. */
  destroy(): void
  /** Connection events. */
  on(event: 'error' | 'terminated', listener: (err: Error) => void): unknown
  on(event: 'ready', listener: () => void): unknown
}

/** The part of a node-redis `multi()` the broker uses: commands sent together, without MULTI/EXEC. */
export interface RedisPipeline {
  addCommand(args: string[]): unknown
  execAsPipeline(): Promise<unknown[]>
}

/** Where the broker reports outages: a Fastify / pino logger fits. */
export type RedisBrokerLogger = BrokerLogger

/** Options of `redisBroker`. */
export interface RedisBrokerOptions {
  /** The Redis to connect to; the broker creates and closes its connections. @default 'redis://localhost:6379' */
  url?: string | undefined
  /**
   * A node-redis client of yours, for publish and replay; it is left open on
   * close. The blocking read uses a `duplicate()` the broker owns, with the
   * broker's own reconnect strategy and dead-socket timeout.
   */
  client?: RedisClient | undefined
  /**
   * Prefix of the broker's keys: the stream `<prefix>log` and, per topic, the
   * presence hash `<prefix>presence:<topic>`; instances with the same prefix
   * share events and presence. @default 'fastify-html-sse:'
   */
  prefix?: string | undefined
  /**
   * How many recent events a `Last-Event-ID` can resume after; 0 resumes only
   * from the newest id. A resume also needs its id to be within `retentionMs`.
   * Each instance keeps this many delivered events in memory and serves most
   * resumes from there, without a Redis command.
   * @default 1000
   */
  replay?: number | undefined
  /**
   * How long an event stays in the Redis stream, in ms. Every publish trims
   * (`XADD ... MINID ~`) the entries older than the newest id minus this, as
   * Redis's clock stamps ids. A time window rather than a count: a count is a
   * few milliseconds at high publish rates, while this is how long an instance
   * may stall (GC pause, CPU spike, slow handler) and still deliver every event
   * in order. An instance that falls further behind sends its streams a
   * `reset` instead of skipping events. Memory in Redis is about publish rate x
   * `retentionMs` x event size: lower it for very high rates. Give every
   * instance sharing a prefix the same value.
   * @default 60000
   */
  retentionMs?: number | undefined
  /**
   * How long one Redis command may take, in ms. `publish`, `replay` and
   * `lastId` reject with `FST_ERR_HTML_SSE_BROKER_UNAVAILABLE` when Redis has
   * not answered by then (a frozen server or a network partition looks like
   * this); they work again as soon as Redis answers. The blocking read's
   * connection is taken for dead when silent for `blockMs + commandTimeoutMs`,
   * and reconnected.
   * @default 5000
   */
  commandTimeoutMs?: number | undefined
  /** How long one `XREAD` blocks before it is sent again, in ms. @default 5000 */
  blockMs?: number | undefined
  /**
   * Where outages are reported: a warning when Redis goes away, once per
   * outage, and an info line when it is back. The plugin hands over its own
   * logger when this is not set. @default process warnings
   */
  logger?: RedisBrokerLogger | undefined
}

/** The options after defaults. */
export interface ResolvedOptions extends LogOptions {
  readonly url: string | undefined
  readonly client: RedisClient | undefined
  /** What every key of the broker starts with. */
  readonly prefix: string
  /** The stream: `<prefix>log`. */
  readonly key: string
  readonly blockMs: number
  /** Where Redis is, for messages: `host:port`, never credentials. */
  readonly target: string
}

/** `host:port` of a Redis URL, never its credentials. */
function describeUrl(url: string | undefined): string {
  if (url === undefined) return 'localhost:6379'
  try {
    const u = new URL(url)
    return `${u.hostname}:${u.port || '6379'}`
  } catch {
    return 'the configured url'
  }
}

/** Checks the options of `redisBroker` and fills in the defaults. */
export function resolveOptions(options: unknown): ResolvedOptions {
  if (options === null || typeof options !== 'object') {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('of redisBroker()', 'must be an object')
  }
  const o = options as Record<string, unknown>
  if (o.url !== undefined && typeof o.url !== 'string') {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('url', 'must be a redis:// or rediss:// URL string')
  }
  if (o.client !== undefined) {
    const c = o.client as Record<string, unknown> | null
    if (
      c === null ||
      typeof c !== 'object' ||
      typeof c.sendCommand !== 'function' ||
      typeof c.duplicate !== 'function'
    ) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID(
        'client',
        'must be a node-redis client (from createClient() of "redis")'
      )
    }
    if (o.url !== undefined) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('url', 'cannot be combined with client; give one of them')
    }
  }
  if (o.prefix !== undefined && typeof o.prefix !== 'string') {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('prefix', 'must be a string')
  }
  // XREAD BLOCK 0 would wait forever: the reader's dead-socket timeout needs a bound.
  const blockMs = optionalMs(o, 'blockMs', 1, 600_000, 5000)
  const shared = resolveLogOptions(o, 1)
  const client = o.client as RedisClient | undefined
  const url = o.url as string | undefined
  const prefix = (o.prefix as string | undefined) ?? 'fastify-html-sse:'
  return {
    url,
    client,
    prefix,
    key: `${prefix}log`,
    ...shared,
    blockMs,
    target: client === undefined ? describeUrl(url) : 'the given client'
  }
}
