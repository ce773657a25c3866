/**
 * The Redis broker: `fastify-html-sse/redis`. One Redis Stream is the ordered
 * log that serves both live delivery and replay, so every instance sees the
 * same events in the same order and a browser may resume on any instance.
 *
 * - `publish`: `XADD <prefix>log MAXLEN ~ <n> * t <topic> b <body>`; the stream
 *   id (`<ms>-<seq>`) is the event id.
 * - Live: one `XREAD BLOCK` loop per broker on its own connection, from the last
 *   id it delivered, so an outage skips nothing that is still in the stream.
 *   Each entry's frame is built once per instance, when read.
 * - Replay: `XRANGE <lastId> + COUNT <replay + 2>`: `lastId` resumes when it is
 *   still an entry and at most `replay` events follow it (the same window as
 *   `memoryBroker`).
 *
 * The client is `redis` (node-redis), Redis's own client and the optional peer
 * dependency: it reconnects with a strategy we choose, can reject commands
 * while offline (`disableOfflineQueue`) so a publish during an outage fails at
 * once instead of waiting in a queue, `duplicate()` gives the blocking read
 * its own connection, and it ships its own types and works from ESM.
 */
import { createClient } from 'redis'
import { FST_ERR_HTML_SSE_BROKER_UNAVAILABLE, FST_ERR_HTML_SSE_OPTION_INVALID } from '../errors.js'
import { checkReplay } from './memory.js'
import type { Broker, BrokerEvent, BrokerListener, BrokerLogger, BrokerReplay } from './types.js'
import { parseId, withId } from './types.js'

/**
 * What the broker needs of a node-redis client (v5 or v6). A client from
 * `createClient()` fits.
 */
export interface RedisClient {
  /** The socket is open (connected or reconnecting). */
  readonly isOpen: boolean
  /** Connected and ready for commands. */
  readonly isReady: boolean
  /** Sends a raw command. */
  sendCommand(args: string[]): Promise<unknown>
  /** A new client with the same options: the broker's own connection for the blocking read. */
  duplicate(overrides?: { disableOfflineQueue?: boolean }): RedisClient
  connect(): Promise<unknown>
  /** Closes after pending replies. */
  close(): Promise<unknown>
  /** Closes at once. */
  destroy(): void
  /** Connection events. */
  on(event: 'error' | 'terminated', listener: (err: Error) => void): unknown
  on(event: 'ready', listener: () => void): unknown
}

/** Where the broker reports outages: a Fastify / pino logger fits. */
export type RedisBrokerLogger = BrokerLogger

/** Options of `redisBroker`. */
export interface RedisBrokerOptions {
  /** The Redis to connect to; the broker creates and closes its connections. @default 'redis://localhost:6379' */
  url?: string
  /**
   * A node-redis client of yours, for publish and replay; it is left open on
   * close. The blocking read uses a `duplicate()` the broker owns.
   */
  client?: RedisClient
  /** Prefix of the broker's key (`<prefix>log`); instances with the same prefix share events. @default 'fastify-html-sse:' */
  prefix?: string
  /**
   * How many recent events a `Last-Event-ID` can resume after; 0 resumes only
   * from the newest id. The stream itself keeps at least `max(replay, 1000)`
   * entries (`MAXLEN ~`), so a reader that stalls briefly skips nothing.
   * @default 1000
   */
  replay?: number
  /**
   * How long one `XREAD` blocks before it is sent again, in ms. A reader
   * connection silent for twice as long (plus a second) is taken for dead and
   * reconnected. @default 5000
   */
  blockMs?: number
  /**
   * Where outages are reported: a warning when Redis goes away, once per
   * outage, and an info line when it is back. The plugin hands over its own
   * logger when this is not set. @default process warnings
   */
  logger?: RedisBrokerLogger
}

/** The broker `redisBroker` returns. */
export interface RedisBroker extends Broker {
  /** Reports outages to `logger` unless the `logger` option was given (the plugin calls this with `app.log`). */
  useLogger(logger: RedisBrokerLogger): void
}

/** At most this many entries per `XREAD`. */
const BATCH = 1000
/**
 * The stream keeps at least this many entries whatever `replay` is: a blocked
 * `XREAD` is served after `XADD` has trimmed, and the loop reads from its last
 * id, so entries must outlive the time between two reads of every instance.
 */
const LIVE_BACKLOG = 1000
const UNAVAILABLE = 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE'
const RECONNECT_BASE_MS = 50
const RECONNECT_MAX_MS = 2000

const processLogger: RedisBrokerLogger = {
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

/** Waits before the next attempt: 50 ms doubling up to 2 s, with jitter so instances do not reconnect in step. */
function backoff(retries: number): number {
  return Math.min(RECONNECT_BASE_MS * 2 ** retries, RECONNECT_MAX_MS) + Math.floor(Math.random() * RECONNECT_BASE_MS)
}

function unavailable(reason: string, cause?: unknown): Error {
  const err = new FST_ERR_HTML_SSE_BROKER_UNAVAILABLE(reason)
  if (cause !== undefined) err.cause = cause
  return err
}

function text(value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (Buffer.isBuffer(value)) return value.toString()
  return undefined
}

type Entry = [id: string, fields: unknown[]]

/** The state of a connection the broker created. */
interface Connection {
  /** It was ready once: errors from now on are outages, not a failed start. */
  ready: boolean
  /** How many times it became ready: a change means a new socket, maybe to a new server. */
  readies: number
}

/** The entries of an `XRANGE` / `XREVRANGE` reply (RESP2 and RESP3 alike). */
function entriesOf(reply: unknown): Entry[] {
  const entries: Entry[] = []
  if (!Array.isArray(reply)) return entries
  for (const item of reply) {
    if (!Array.isArray(item)) continue
    const id = text(item[0])
    if (id !== undefined) entries.push([id, Array.isArray(item[1]) ? item[1] : []])
  }
  return entries
}

/** The entries of an `XREAD` reply on one key: `null`, `[[key, entries]]` (RESP2) or `{ key: entries }` (RESP3). */
function entriesOfRead(reply: unknown): Entry[] {
  if (reply === null || typeof reply !== 'object') return []
  if (Array.isArray(reply)) return entriesOf((reply[0] as unknown[] | undefined)?.[1])
  if (reply instanceof Map) return entriesOf(reply.values().next().value)
  return entriesOf(Object.values(reply)[0])
}

function field(fields: unknown[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (text(fields[i]) === name) return text(fields[i + 1])
  }
  return undefined
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

class RedisStreamBroker implements RedisBroker {
  readonly #key: string
  readonly #replay: number
  readonly #maxLen: string
  readonly #blockMs: number
  readonly #url: string | undefined
  readonly #given: RedisClient | undefined
  readonly #target: string
  readonly #listeners = new Set<BrokerListener>()
  /** Events the loop built, by id, so a replay reuses their frames. */
  readonly #recent = new Map<string, BrokerEvent>()
  /** The connections this broker created. */
  readonly #owned = new Map<RedisClient, Connection>()
  /** Wakes the read loop when it waits for the connection or a retry. */
  readonly #wakers = new Set<() => void>()
  #log: RedisBrokerLogger
  readonly #logGiven: boolean
  #commands: Promise<RedisClient> | null = null
  #started: Promise<void> | null = null
  #reader: RedisClient | null = null
  #loop: Promise<void> | null = null
  #lastSeen = '0-0'
  #downSince: number | null = null
  #failedAttempts = 0
  #closing: Promise<void> | null = null

  constructor(options: RedisBrokerOptions, replay: number) {
    this.#key = `${options.prefix ?? 'fastify-html-sse:'}log`
    this.#replay = replay
    this.#maxLen = String(Math.max(replay, LIVE_BACKLOG))
    this.#blockMs = options.blockMs ?? 5000
    this.#url = options.url
    this.#given = options.client
    this.#target = this.#given === undefined ? describeUrl(this.#url) : 'the given client'
    this.#log = options.logger ?? processLogger
    this.#logGiven = options.logger !== undefined
  }

  useLogger(logger: RedisBrokerLogger): void {
    if (!this.#logGiven) this.#log = logger
  }

  async publish(topic: string, body: string): Promise<string> {
    const client = await this.#client()
    // The reader may know first: a frozen server leaves the command socket open but silent.
    if (!client.isReady || this.#downSince !== null) {
      throw unavailable(`Redis at ${this.#target} is unreachable; the broker is reconnecting`)
    }
    let reply: unknown
    try {
      reply = await client.sendCommand(['XADD', this.#key, 'MAXLEN', '~', this.#maxLen, '*', 't', topic, 'b', body])
    } catch (err) {
      throw unavailable(`Redis at ${this.#target} failed: ${(err as Error).message}`, err)
    }
    const id = text(reply)
    if (id === undefined) throw unavailable(`Redis at ${this.#target} answered XADD without an id`)
    return id
  }

  async replay(topics: readonly string[], lastId: string): Promise<BrokerReplay> {
    const client = await this.#client()
    if (!client.isReady) throw unavailable(`Redis at ${this.#target} is unreachable; the broker is reconnecting`)
    // A malformed id never reaches Redis, where it would be a syntax error.
    const range =
      parseId(lastId) === null
        ? Promise.resolve(null)
        : client.sendCommand(['XRANGE', this.#key, lastId, '+', 'COUNT', String(this.#replay + 2)])
    const newest = client.sendCommand(['XREVRANGE', this.#key, '+', '-', 'COUNT', '1'])
    let entries: Entry[]
    let head: string | null
    try {
      const [a, b] = await Promise.all([range, newest])
      entries = entriesOf(a)
      head = entriesOf(b)[0]?.[0] ?? null
    } catch (err) {
      throw unavailable(`Redis at ${this.#target} failed: ${(err as Error).message}`, err)
    }
    if (entries[0]?.[0] !== lastId || entries.length > this.#replay + 1) return { found: false, head }
    const wanted = new Set(topics)
    const events: BrokerEvent[] = []
    for (let i = 1; i < entries.length; i++) {
      const [id, fields] = entries[i] as Entry
      const topic = field(fields, 't')
      if (topic === undefined || !wanted.has(topic)) continue
      const cached = this.#recent.get(id)
      if (cached !== undefined) {
        events.push(cached)
        continue
      }
      const body = field(fields, 'b')
      if (body !== undefined) events.push({ id, topic, frame: withId(id, body) })
    }
    return { found: true, events }
  }

  async lastId(): Promise<string | null> {
    const client = await this.#client()
    if (!client.isReady) throw unavailable(`Redis at ${this.#target} is unreachable; the broker is reconnecting`)
    try {
      return entriesOf(await client.sendCommand(['XREVRANGE', this.#key, '+', '-', 'COUNT', '1']))[0]?.[0] ?? null
    } catch (err) {
      throw unavailable(`Redis at ${this.#target} failed: ${(err as Error).message}`, err)
    }
  }

  async listen(listener: BrokerListener): Promise<void> {
    if (this.#closing !== null) throw unavailable('it is closed')
    if (this.#started === null) {
      this.#started = this.#start()
      this.#started.catch(() => {
        this.#started = null
      })
    }
    await this.#started
    this.#listeners.add(listener)
  }

  unlisten(listener: BrokerListener): Promise<void> {
    this.#listeners.delete(listener)
    return Promise.resolve()
  }

  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#shutdown()
    return this.#closing
  }

  async #shutdown(): Promise<void> {
    this.#listeners.clear()
    this.#wake()
    // The reader is blocked in XREAD: only dropping its socket ends that at once.
    this.#reader?.destroy()
    await this.#loop
    for (const client of this.#owned.keys()) {
      if (client.isReady) await client.close().catch(() => client.destroy())
      else client.destroy()
    }
    this.#owned.clear()
  }

  /** The connection for publish and replay: the given client, or one made on first use. */
  #client(): Promise<RedisClient> {
    if (this.#closing !== null) return Promise.reject(unavailable('it is closed'))
    if (this.#given !== undefined) return Promise.resolve(this.#given)
    if (this.#commands === null) {
      this.#commands = this.#connect(this.#create(false))
      this.#commands.catch(() => {
        this.#commands = null
      })
    }
    return this.#commands
  }

  /** A new connection: for commands, or for the blocking read. */
  #create(reader: boolean): RedisClient {
    if (this.#given !== undefined) return this.#given.duplicate({ disableOfflineQueue: true })
    const state: Connection = { ready: false, readies: 0 }
    const client = createClient({
      url: this.#url,
      disableOfflineQueue: true,
      socket: {
        // Fail fast on the first connection (the app's start fails with a clear
        // error), then retry for as long as it takes.
        reconnectStrategy: (retries) => (state.ready ? backoff(retries) : false),
        // XREAD answers at least every blockMs: a reader silent for longer
        // is on a dead connection (a peer gone without a reset), so drop it.
        ...(reader ? { socketTimeout: 2 * this.#blockMs + 1000 } : {})
      }
    })
    this.#owned.set(client, state)
    return client
  }

  async #connect(client: RedisClient): Promise<RedisClient> {
    let state = this.#owned.get(client)
    if (state === undefined) {
      state = { ready: false, readies: 0 }
      this.#owned.set(client, state)
    }
    const owned = state
    client.on('error', (err: Error) => this.#onError(client, owned, err))
    client.on('ready', () => this.#onReady(owned))
    client.on('terminated', (err: Error) => {
      if (owned.ready && this.#closing === null) {
        this.#log.error({ err }, `fastify-html-sse: the Redis connection to ${this.#target} gave up reconnecting`)
      }
    })
    try {
      await client.connect()
    } catch (err) {
      this.#owned.delete(client)
      client.destroy()
      throw unavailable(`cannot connect to Redis at ${this.#target}: ${(err as Error).message}`, err)
    }
    if (this.#closing !== null) {
      this.#owned.delete(client)
      client.destroy()
      throw unavailable('it is closed')
    }
    return client
  }

  #onError(client: RedisClient, state: Connection, err: Error): void {
    // Before the first ready, the error rejects connect(); after close, it is ours.
    if (!state.ready || this.#closing !== null) return
    if (client.isReady) {
      this.#log.error({ err }, `fastify-html-sse: Redis client error (${this.#target})`)
      return
    }
    if (this.#downSince !== null) {
      this.#failedAttempts++
      return
    }
    this.#downSince = Date.now()
    this.#failedAttempts = 0
    this.#log.warn(
      { err },
      `fastify-html-sse: lost the connection to Redis at ${this.#target}; publishing fails (FST_ERR_HTML_SSE_BROKER_UNAVAILABLE) and live delivery waits until it is back; reconnecting`
    )
  }

  #onReady(state: Connection): void {
    state.ready = true
    state.readies++
    this.#wake()
    if (this.#downSince === null || this.#closing !== null) return
    for (const client of this.#owned.keys()) if (!client.isReady) return
    const downMs = Date.now() - this.#downSince
    this.#downSince = null
    this.#log.info(
      { downMs, failedAttempts: this.#failedAttempts },
      `fastify-html-sse: reconnected to Redis at ${this.#target} after ${downMs} ms`
    )
  }

  #wake(): void {
    for (const wake of this.#wakers) wake()
    this.#wakers.clear()
  }

  /** Resolves when woken (connection ready, close) or after `ms`. */
  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.#wakers.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#wakers.add(done)
    })
  }

  async #start(): Promise<void> {
    // The command connection is made now too, so publishing never waits on a first connect.
    const [commands, connected] = await Promise.allSettled([this.#client(), this.#connect(this.#create(true))])
    if (connected.status === 'rejected') throw connected.reason
    const reader = connected.value
    try {
      if (commands.status === 'rejected') throw commands.reason
      const newest = await reader.sendCommand(['XREVRANGE', this.#key, '+', '-', 'COUNT', '1'])
      this.#lastSeen = entriesOf(newest)[0]?.[0] ?? '0-0'
    } catch (err) {
      this.#owned.delete(reader)
      reader.destroy()
      if ((err as { code?: unknown }).code === UNAVAILABLE) throw err
      throw unavailable(`Redis at ${this.#target} failed: ${(err as Error).message}`, err)
    }
    this.#reader = reader
    this.#loop = this.#run(reader)
  }

  /** The one read loop: ends only when the broker closes. */
  async #run(reader: RedisClient): Promise<void> {
    const state = this.#owned.get(reader) as Connection
    let readies = state.readies
    let failures = 0
    while (this.#closing === null) {
      if (!reader.isReady) {
        await this.#pause(RECONNECT_MAX_MS)
        continue
      }
      try {
        if (state.readies !== readies) {
          const now = state.readies
          await this.#resync(reader)
          readies = now
        }
        const reply = await reader.sendCommand([
          'XREAD',
          'COUNT',
          String(BATCH),
          'BLOCK',
          String(this.#blockMs),
          'STREAMS',
          this.#key,
          this.#lastSeen
        ])
        failures = 0
        this.#deliver(entriesOfRead(reply))
      } catch (err) {
        if (this.#closing !== null) break
        if (!reader.isReady) continue
        // Redis answered with an error (e.g. the key is not a stream): retry slowly, say it once.
        if (failures++ === 0) this.#log.error({ err }, `fastify-html-sse: reading the Redis stream ${this.#key} failed`)
        await this.#pause(backoff(failures))
      }
    }
  }

  /**
   * After a reconnect: when the stream no longer holds the last id delivered
   * (Redis restarted without persistence, the key was recreated, or trimmed
   * past it), every entry it holds is newer for this reader, so read it from
   * the start instead of waiting for ids above an id of a stream that is gone.
   */
  async #resync(reader: RedisClient): Promise<void> {
    if (this.#lastSeen === '0-0') return
    const here = await reader.sendCommand(['XRANGE', this.#key, this.#lastSeen, this.#lastSeen])
    if (entriesOf(here).length > 0) return
    this.#log.info(
      { lastId: this.#lastSeen },
      `fastify-html-sse: the Redis stream ${this.#key} no longer holds the last delivered id; reading it from its start`
    )
    this.#lastSeen = '0-0'
    this.#recent.clear()
  }

  #deliver(entries: Entry[]): void {
    for (const [id, fields] of entries) {
      this.#lastSeen = id
      const topic = field(fields, 't')
      const body = field(fields, 'b')
      if (topic === undefined || body === undefined) continue
      const event: BrokerEvent = { id, topic, frame: withId(id, body) }
      if (this.#replay > 0) {
        this.#recent.set(id, event)
        if (this.#recent.size > this.#replay) this.#recent.delete(this.#recent.keys().next().value as string)
      }
      for (const listener of this.#listeners) {
        try {
          listener(event)
        } catch (err) {
          this.#log.error({ err }, 'fastify-html-sse: a broker listener threw')
        }
      }
    }
  }
}

function checkOptions(options: unknown): RedisBrokerOptions {
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
  if (
    o.blockMs !== undefined &&
    (!Number.isSafeInteger(o.blockMs) || (o.blockMs as number) < 1 || (o.blockMs as number) > 600_000)
  ) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID(
      'blockMs',
      `must be an integer from 1 to 600000, got ${String(o.blockMs)}`
    )
  }
  if (o.logger !== undefined) {
    const l = o.logger as Record<string, unknown> | null
    if (l === null || typeof l !== 'object' || ['info', 'warn', 'error'].some((m) => typeof l[m] !== 'function')) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('logger', 'must have info(), warn() and error() methods')
    }
  }
  return o as RedisBrokerOptions
}

/**
 * A broker for several instances: topics are shared through a Redis Stream, so
 * a publish on any instance reaches the streams of every instance, and a
 * browser may resume its `Last-Event-ID` on any of them. Connections it creates
 * are closed with the app; a `client` you pass is left open.
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
  const checked = checkOptions(options)
  return new RedisStreamBroker(checked, checkReplay(checked.replay ?? 1000))
}
