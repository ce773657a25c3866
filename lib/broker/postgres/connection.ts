/**
 * Connection ownership and bounds: the pool (the given one, or one the broker
 * makes and ends), the listening connection, and one deadline on every query.
 *
 * node-postgres has no deadline that covers both the wait for a pool
 * connection and a reply that never comes (a frozen server, a dead network
 * path: the socket may never say so), so `query` races both against one timer.
 * A connection whose query timed out is destroyed, not given back: a late reply
 * must not reach the next query. A pool the broker made also sets
 * `statement_timeout`, so the server gives up a statement the broker no longer
 * waits for (a publish waiting for the ordering lock, say) instead of running it
 * later.
 */
import pg from 'pg'
import { unavailable, withDeadline } from '../shared/timing.js'
import type { TransactionClient } from '../types.js'
import type { PgPool, PgPoolClient, PgResult, ResolvedOptions } from './options.js'

/** A `pg.Client` as the listener uses it. */
export interface ListenClient {
  query(text: string, values?: unknown[]): Promise<PgResult>
  connect(): Promise<unknown>
  end(): Promise<void>
  on(event: 'notification', listener: (message: { channel: string; payload?: string | undefined }) => void): unknown
  on(event: 'error' | 'end', listener: (err?: Error) => void): unknown
}

const ignore = (): void => {}

/** Ends a socket at once when the client is a `pg` one (best effort: its `end()` waits on a dead peer). */
function destroySocket(client: unknown): void {
  const stream = (client as { connection?: { stream?: { destroy?: () => void } } }).connection?.stream
  stream?.destroy?.()
}

/** The coded error of a failed query: PostgreSQL's own is its cause. */
function failed(err: Error): Error {
  return (err as { code?: string }).code === 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE'
    ? err
    : unavailable(`PostgreSQL failed: ${err.message}`, err)
}

/** Runs `start()` under a deadline of `ms`, failures coded as the broker's; `onTimeout` runs once when it passes. */
export function bounded<T>(
  start: () => PromiseLike<T>,
  ms: number,
  what: () => string,
  onTimeout?: () => void
): Promise<T> {
  return withDeadline(start, ms, what, failed, onTimeout)
}

/** The database side of one broker. */
export class Database {
  readonly #options: ResolvedOptions
  readonly #pool: PgPool
  readonly #owned: boolean
  readonly #config: object
  #closed = false

  constructor(options: ResolvedOptions) {
    this.#options = options
    if (options.pool !== undefined) {
      this.#pool = options.pool
      this.#owned = false
      this.#config = options.pool.options ?? {}
    } else {
      this.#config = {
        connectionString: options.connectionString,
        connectionTimeoutMillis: options.commandTimeoutMs,
        keepAlive: true
      }
      const pool = new pg.Pool({ ...this.#config, max: 4, statement_timeout: options.commandTimeoutMs })
      // An idle connection that breaks is dropped by the pool; the next query makes a new one.
      pool.on('error', () => {})
      this.#pool = pool as unknown as PgPool
      this.#owned = true
    }
  }

  /** One query on a pool connection, bounded by `commandTimeoutMs` (the wait for the connection included). */
  query(text: string, values?: unknown[]): Promise<PgResult> {
    if (this.#closed) return Promise.reject(unavailable('it is closed'))
    let client: PgPoolClient | null = null
    let timedOut = false
    let released = false
    /** Gives the connection back once; with an error the pool destroys it. */
    const give = (taken: PgPoolClient, err?: Error) => {
      if (released) return
      released = true
      if (err === undefined) taken.off?.('error', ignore)
      taken.release(err)
    }
    const work = async () => {
      const taken = await this.#pool.connect()
      if (timedOut) {
        taken.release(true)
        throw unavailable('timed out')
      }
      client = taken
      // A pool listens for a connection's `error` only while it is idle: a break now must not go unheard.
      taken.on?.('error', ignore)
      try {
        const result = await taken.query(text, values)
        give(taken)
        return result
      } catch (err) {
        // Rare, and a broken connection must not go back: the pool makes a new one.
        give(taken, err as Error)
        throw err
      }
    }
    return bounded(
      work,
      this.#options.commandTimeoutMs,
      () =>
        `PostgreSQL at ${this.#options.target} did not answer within ${this.#options.commandTimeoutMs} ms${client === null ? ' (no connection)' : ''}`,
      () => {
        timedOut = true
        const c = client as PgPoolClient | null
        if (c !== null) {
          give(c, unavailable('timed out'))
          destroySocket(c)
        }
      }
    )
  }

  /** One query on the app's client (inside its transaction), bounded by `commandTimeoutMs`; the client stays the app's. */
  inTransaction(client: TransactionClient, text: string, values: unknown[]): Promise<PgResult> {
    if (this.#closed) return Promise.reject(unavailable('it is closed'))
    const ms = this.#options.commandTimeoutMs
    return bounded(
      () => (client.query as unknown as (t: string, v: unknown[]) => Promise<PgResult>).call(client, text, values),
      ms,
      () => `PostgreSQL did not answer within ${ms} ms on the transaction's client`
    )
  }

  /** A new connection of the broker's own for `LISTEN`, connected within `commandTimeoutMs`. */
  async listener(): Promise<ListenClient> {
    if (this.#closed) throw unavailable('it is closed')
    const client = new pg.Client({ ...this.#config, keepAlive: true }) as unknown as ListenClient
    client.on('error', () => {})
    await bounded(
      () => client.connect(),
      this.#options.commandTimeoutMs,
      () => `cannot connect to PostgreSQL at ${this.#options.target} within ${this.#options.commandTimeoutMs} ms`,
      () => this.drop(client)
    ).catch((err: Error) => {
      this.drop(client)
      throw err
    })
    return client
  }

  /** Drops a listening connection at once. */
  drop(client: ListenClient): void {
    destroySocket(client)
    client.end().catch(() => {})
  }

  /** Ends the pool when the broker made it. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (!this.#owned) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      this.#pool.end().catch(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.#options.commandTimeoutMs)
      })
    ])
    clearTimeout(timer)
  }
}
