/**
 * Connection ownership and health: which connections the broker made (and so
 * closes), the one for commands and the one for the blocking read, a bound on
 * every command, and the outage log.
 *
 * node-redis reconnects by itself; the broker only picks the strategy for the
 * connections it owns (fail the first connect at once so the app's start
 * fails clearly, then retry with backoff) and, for the reader, the client's
 * own dead-socket detection (`socketTimeout`): `XREAD BLOCK` answers at least
 * every `blockMs`, so a reader silent for `blockMs + commandTimeoutMs` is on a
 * dead connection and is reconnected. The client's per-command `timeout` only
 * covers a command still waiting to be written (node-redis drops the timer once
 * the command is on the socket), so a command sent to a frozen server would
 * wait forever: `send` passes that option and also bounds the wait for the
 * reply.
 */
import { createClient } from 'redis'
import { Once } from '../shared/broker.js'
import { retryDelay, unavailable, withDeadline } from '../shared/timing.js'
import type { RedisBrokerLogger, RedisClient, ResolvedOptions } from './options.js'

/** The first failed reply of a pipeline that failed as a whole (node-redis's MultiErrorReply), else `err`. */
function firstError(err: unknown): unknown {
  const { replies, errorIndexes } = err as { replies?: unknown[]; errorIndexes?: number[] }
  const first = Array.isArray(replies) && Array.isArray(errorIndexes) ? replies[errorIndexes[0] as number] : undefined
  return first instanceof Error ? first : err
}

/** The connections of one broker. */
export class Connections {
  readonly #options: ResolvedOptions
  readonly #log: () => RedisBrokerLogger
  /** Every connection this broker made: closed with it. */
  readonly #owned = new Set<RedisClient>()
  /** Callers waiting for a connection to be ready again, by connection. */
  readonly #readyWaiters = new Map<RedisClient, Set<() => void>>()
  /** The owned command connection, made at first use, again after a failed connect or a timeout. */
  readonly #commands = new Once(() =>
    this.#connect(this.#create(false), false).then((client) => {
      this.#commandsClient = client
      return client
    })
  )
  #commandsClient: RedisClient | null = null
  #downSince: number | null = null
  #failedAttempts = 0
  #closed = false

  constructor(options: ResolvedOptions, log: () => RedisBrokerLogger) {
    this.#options = options
    this.#log = log
  }

  /** The connection for publish, replay and lastId: the given client, or one made on first use. */
  commands(): Promise<RedisClient> {
    if (this.#closed) return Promise.reject(unavailable('it is closed'))
    const given = this.#options.client
    if (given !== undefined) return Promise.resolve(given)
    return this.#commands.get()
  }

  /** A new connection for the blocking read, owned by the broker; its outages are logged. */
  reader(): Promise<RedisClient> {
    if (this.#closed) return Promise.reject(unavailable('it is closed'))
    return this.#connect(this.#create(true), true)
  }

  /**
   * Sends one command; rejects with `FST_ERR_HTML_SSE_BROKER_UNAVAILABLE` when
   * Redis refuses it, fails, or does not answer within `commandTimeoutMs`.
   */
  send(client: RedisClient, args: string[]): Promise<unknown> {
    return this.#bounded(client, args[0] as string, (ms) => client.sendCommand(args, { timeout: ms }))
  }

  /**
   * Sends several commands in one go (node-redis pipelines them: one round
   * trip) under one bound; resolves to their replies in order, or rejects as
   * `send` does when any fails or they are not all answered in time.
   */
  sendAll(client: RedisClient, commands: readonly string[][]): Promise<unknown[]> {
    const what = commands.length === 1 ? (commands[0]?.[0] as string) : `${commands.length} pipelined commands`
    // node-redis's pipeline queues the batch and writes it once: 20,000 commands took ~55 ms where
    // as many sendCommand calls took ~300 ms. Neither gets node-redis's own `timeout` (a timer per
    // command); the batch's bound rejects all the same, and on a client of the app's that queues
    // while offline, commands not yet written go out after the reconnect, in order.
    return this.#bounded(client, what, () => {
      const pipeline = client.multi?.()
      if (pipeline === undefined) return Promise.all(commands.map((args) => client.sendCommand(args)))
      for (const args of commands) pipeline.addCommand(args)
      return pipeline.execAsPipeline().catch((err: unknown) => {
        throw firstError(err)
      })
    }) as Promise<unknown[]>
  }

  #bounded(client: RedisClient, what: string, run: (ms: number) => Promise<unknown>): Promise<unknown> {
    if (this.#closed) return Promise.reject(unavailable('it is closed'))
    const ms = this.#options.commandTimeoutMs
    const target = this.#options.target
    return withDeadline(
      () => run(ms),
      ms,
      () => `Redis at ${target} did not answer ${what} within ${ms} ms`,
      (err) => unavailable(`Redis at ${target} failed: ${err.message}`, err),
      () => this.#timedOut(client)
    )
  }

  /** Resolves when `client` is ready for commands again, or the broker closes. */
  ready(client: RedisClient): Promise<void> {
    if (client.isReady || this.#closed) return Promise.resolve()
    return new Promise((resolve) => {
      let waiters = this.#readyWaiters.get(client)
      if (waiters === undefined) {
        waiters = new Set()
        this.#readyWaiters.set(client, waiters)
      }
      waiters.add(resolve)
    })
  }

  /** Drops `client` at once: a blocked command on it rejects. */
  drop(client: RedisClient): void {
    this.#owned.delete(client)
    client.destroy()
    this.#wake(client)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const client of this.#readyWaiters.keys()) this.#wake(client)
    const closing: Array<Promise<unknown>> = []
    for (const client of this.#owned) {
      if (!client.isReady) {
        client.destroy()
        continue
      }
      // close() waits for pending replies, which a frozen server never sends.
      const timer = setTimeout(() => client.destroy(), this.#options.commandTimeoutMs)
      closing.push(
        client
          .close()
          .catch(() => client.destroy())
          .finally(() => clearTimeout(timer))
      )
    }
    this.#owned.clear()
    await Promise.all(closing)
  }

  /**
   * A command on the owned command connection went unanswered: the server is
   * frozen or the path to it is dead, and the socket may never say so. Drop it;
   * the next command connects anew (and fails just as fast while it lasts).
   */
  #timedOut(client: RedisClient): void {
    if (client !== this.#commandsClient) return
    this.#commandsClient = null
    this.#commands.reset()
    this.drop(client)
  }

  #create(reader: boolean): RedisClient {
    let everReady = false
    const socket = {
      // Fail fast on the first connection (the app's start fails with a clear
      // error), then retry for as long as it takes.
      reconnectStrategy: (retries: number) => (everReady ? retryDelay(retries, true) : false),
      ...(reader ? { socketTimeout: this.#options.blockMs + this.#options.commandTimeoutMs } : {})
    }
    const given = this.#options.client
    const client =
      given !== undefined
        ? given.duplicate({ disableOfflineQueue: true, socket: { ...given.options?.socket, ...socket } })
        : (createClient({ url: this.#options.url, disableOfflineQueue: true, socket }) as unknown as RedisClient)
    client.on('ready', () => {
      everReady = true
      this.#wake(client)
    })
    this.#owned.add(client)
    return client
  }

  async #connect(client: RedisClient, reader: boolean): Promise<RedisClient> {
    let wasReady = false
    client.on('ready', () => {
      if (reader && wasReady) this.#up()
      wasReady = true
    })
    client.on('error', (err: Error) => {
      // Before the first ready, the error rejects connect(); after close, it is ours.
      if (!wasReady || this.#closed || !reader) return
      if (client.isReady) this.#log().error({ err }, `fastify-html-sse: Redis client error (${this.#options.target})`)
      else this.#down(err)
    })
    client.on('terminated', (err: Error) => {
      if (reader && wasReady && !this.#closed) {
        this.#log().error(
          { err },
          `fastify-html-sse: the Redis connection to ${this.#options.target} gave up reconnecting`
        )
      }
    })
    const target = this.#options.target
    const ms = this.#options.commandTimeoutMs
    let timer: NodeJS.Timeout | undefined
    try {
      // A frozen server accepts the TCP connection and never answers the handshake.
      await Promise.race([
        client.connect(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)
        })
      ])
    } catch (err) {
      this.drop(client)
      throw unavailable(`cannot connect to Redis at ${target}: ${(err as Error).message}`, err)
    } finally {
      clearTimeout(timer)
    }
    if (this.#closed) {
      this.drop(client)
      throw unavailable('it is closed')
    }
    return client
  }

  #down(err: Error): void {
    if (this.#downSince !== null) {
      this.#failedAttempts++
      return
    }
    this.#downSince = Date.now()
    this.#failedAttempts = 0
    this.#log().warn(
      { err },
      `fastify-html-sse: lost the connection to Redis at ${this.#options.target}; publishing fails (FST_ERR_HTML_SSE_BROKER_UNAVAILABLE) and live delivery waits until it is back; reconnecting`
    )
  }

  #up(): void {
    if (this.#downSince === null || this.#closed) return
    const downMs = Date.now() - this.#downSince
    this.#downSince = null
    this.#log().info(
      { downMs, failedAttempts: this.#failedAttempts },
      `fastify-html-sse: reconnected to Redis at ${this.#options.target} after ${downMs} ms`
    )
  }

  #wake(client: RedisClient): void {
    const waiters = this.#readyWaiters.get(client)
    if (waiters === undefined) return
    this.#readyWaiters.delete(client)
    for (const wake of waiters) wake()
  }
}
