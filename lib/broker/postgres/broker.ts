/**
 * The Postgres broker: one table is the ordered log that serves live delivery
 * and replay, and a publish is one `INSERT` on the app's own connection, inside
 * its transaction when it gives one: the event reaches streams iff that
 * transaction commits. This file ties the parts together and publishes; each
 * concern has its own file: `options.ts`, `connection.ts` (ownership, deadlines),
 * `schema.ts` (the tables, the statements, the order), `reader.ts` (LISTEN, the
 * poll, gaps, retention), `replay.ts` (the queries a resume asks),
 * `presence.ts` (who is there, per topic, across instances). What it shares
 * with the Redis broker is in `../shared/`.
 *
 * A keyed event's key is a column of its row; it comes back on the event live,
 * from the window and from a range query alike (`eventOfRow`), and the hub
 * drops superseded keyed events from a replay. Control entries (the topic '')
 * are rows like any other: no stream subscribes to them, the hubs read them.
 */
import { FST_ERR_HTML_SSE_OPTION_INVALID, FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED } from '../../errors.js'
import { checkName } from '../../validate.js'
import { LogBroker, Once } from '../shared/broker.js'
import { Replays } from '../shared/replays.js'
import { unavailable } from '../shared/timing.js'
import { RecentWindow } from '../shared/window.js'
import type {
  Broker,
  BrokerLastIdOptions,
  BrokerPublishOptions,
  BrokerReplay,
  Presence,
  PresenceShare,
  TransactionClient
} from '../types.js'
import { compareIds } from '../types.js'
import { Database } from './connection.js'
import type { PostgresBrokerLogger, PostgresBrokerOptions } from './options.js'
import { resolveOptions } from './options.js'
import { PresenceTable } from './presence.js'
import { LogReader, LogState } from './reader.js'
import { TableQueries } from './replay.js'
import { type Statements, statements } from './schema.js'

/** The broker `postgresBroker` returns. */
export interface PostgresBroker extends Broker {
  readonly transactional: true
  /** Reports outages to `logger` unless the `logger` option was given (the plugin calls this with `app.log`). */
  useLogger(logger: PostgresBrokerLogger): void
  /** Every `sharePresence` call renews all of the instance's shares: the hub renews with an empty map. */
  readonly presenceRenewal: true
  /**
   * Renews this instance and replaces its shares of the topics in `shares`: one statement per call (see `presence.ts`).
   * Resolves false when the instance was not live before (the hub then shares every topic again).
   */
  sharePresence(instance: string, shares: ReadonlyMap<string, PresenceShare | null>, ttlMs: number): Promise<boolean>
  /** A topic's presence across every instance sharing the table: one query. */
  presence(topic: string): Promise<Presence>
}

const UNDEFINED_TABLE = '42P01'

/**
 * A pool's `query` would run on a connection of its own, outside the app's
 * transaction: refuse it rather than publish before the commit.
 */
function checkClient(transaction: TransactionClient | undefined): TransactionClient | undefined {
  const t = transaction as { connect?: unknown; totalCount?: unknown } | undefined
  if (t !== undefined && typeof t.connect === 'function' && typeof t.totalCount === 'number') {
    throw new FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED(
      'options.transaction is a pool: pass the client you ran BEGIN on (const client = await pool.connect())'
    )
  }
  return transaction
}

class PostgresLogBroker extends LogBroker implements PostgresBroker {
  readonly transactional = true
  readonly presenceRenewal = true
  readonly #options: ReturnType<typeof resolveOptions>
  readonly #db: Database
  readonly #sql: Statements
  readonly #state = new LogState()
  readonly #reader: LogReader
  readonly #queries: TableQueries
  readonly #replays: Replays
  readonly #presence: PresenceTable
  /** The tables exist and the epoch is read: see `#setUp`. */
  readonly #ready = new Once(() => this.#setUp())
  /** The newest id this instance published and committed itself. */
  #published: string | null = null

  constructor(options: PostgresBrokerOptions) {
    const resolved = resolveOptions(options)
    super(resolved.logger, 'FST_HTML_SSE_POSTGRES')
    this.#options = resolved
    this.#db = new Database(resolved)
    this.#sql = statements(resolved)
    const window = RecentWindow.forReplay(resolved.replay)
    this.#reader = new LogReader(this.#db, resolved, this.#sql, this.#state, window, this.listeners, this.logger)
    this.#queries = new TableQueries(this.#db, this.#reader, window, resolved, this.#sql, this.#state)
    this.#replays = new Replays(this.#queries)
    this.#presence = new PresenceTable(this.#db, this.#sql)
  }

  async publish(topic: string, body: string, options?: BrokerPublishOptions): Promise<string> {
    const transaction = checkClient(options?.transaction)
    const key = options?.key
    if (key !== undefined) checkName('key', key)
    if (key?.includes('\0')) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('key', 'must not hold NUL (PostgreSQL text cannot store it)')
    }
    await this.#open()
    const values = [topic, body, this.#options.table, key ?? null]
    const reply = await this.#tableMissing(
      transaction === undefined
        ? this.#db.query(this.#sql.publish, values)
        : this.#db.inTransaction(transaction, this.#sql.publish, values)
    )
    const row = reply.rows[0] as { id: string; epoch: string } | undefined
    if (row === undefined) throw unavailable('the INSERT returned no id')
    const id = `${row.epoch}-${row.id}`
    // Only a publish this broker committed itself is known to be in the log.
    if (transaction === undefined && (this.#published === null || compareIds(id, this.#published) > 0)) {
      this.#published = id
    }
    return id
  }

  async replay(topics: readonly string[], lastId: string): Promise<BrokerReplay> {
    await this.#open()
    return this.#replays.replay(topics, lastId)
  }

  async lastId(options?: BrokerLastIdOptions): Promise<string | null> {
    this.checkOpen()
    const transaction = checkClient(options?.transaction)
    await this.#open()
    return transaction === undefined ? this.#replays.lastId(this.#published) : this.#queries.lastIdIn(transaction)
  }

  async sharePresence(
    instance: string,
    shares: ReadonlyMap<string, PresenceShare | null>,
    ttlMs: number
  ): Promise<boolean> {
    await this.#open()
    return this.#tableMissing(this.#presence.share(instance, shares, ttlMs))
  }

  async presence(topic: string): Promise<Presence> {
    await this.#open()
    return this.#tableMissing(this.#presence.presence(topic))
  }

  protected async start(): Promise<void> {
    await this.#open()
    await this.#reader.start()
  }

  protected async shutdown(): Promise<void> {
    await this.#reader.stop()
    await this.#db.close()
  }

  /** Throws once closed; else resolves when the tables are set up. */
  #open(): Promise<void> {
    this.checkOpen()
    return this.#ready.get()
  }

  /**
   * Reads the epoch, creating the tables first when they are missing (or
   * adding what a table of an earlier version lacks: `key`, the presence
   * tables); once, retried after a failure.
   */
  async #setUp(): Promise<void> {
    type EpochRow = { epoch: string; keyed: boolean; shared: boolean; renewed: boolean } | undefined
    let reply: { rows: readonly unknown[] }
    try {
      reply = await this.#db.query(this.#sql.epoch)
    } catch (err) {
      if ((err as { cause?: { code?: string } }).cause?.code !== UNDEFINED_TABLE) throw err
      await this.#db.query(this.#sql.create)
      reply = await this.#db.query(this.#sql.epoch)
    }
    const first = reply.rows[0] as EpochRow
    if (first !== undefined && (!first.keyed || !first.shared || !first.renewed)) {
      await this.#db.query(this.#sql.create)
      reply = await this.#db.query(this.#sql.epoch)
    }
    const epoch = Number((reply.rows[0] as EpochRow)?.epoch)
    if (!Number.isSafeInteger(epoch)) throw unavailable(`${this.#options.table}_meta holds no epoch`)
    this.#state.epoch = epoch
  }

  /** A query that failed because the table is gone makes the next call create it again. */
  async #tableMissing<T>(query: Promise<T>): Promise<T> {
    try {
      return await query
    } catch (err) {
      if ((err as { cause?: { code?: string } }).cause?.code === UNDEFINED_TABLE) this.#ready.reset()
      throw err
    }
  }
}

/**
 * A broker for several instances that share a PostgreSQL database: events are
 * rows of one table, written by `publish` inside the app's transaction when it
 * passes `{ transaction: client }`, so streams get them iff it commits, on every
 * instance, in one order. A `pool` you pass is left open; one it makes is ended
 * on close. Every query is bounded by `commandTimeoutMs`; an instance that falls
 * more than `retentionMs` behind sends its streams a `reset` rather than skip.
 *
 * @example
 * ```ts
 * import pg from 'pg'
 * import htmlSse from 'fastify-html-sse'
 * import { postgresBroker } from 'fastify-html-sse/postgres'
 *
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL })
 * await app.register(htmlSse, { broker: postgresBroker({ pool }) })
 * ```
 */
export function postgresBroker(options: PostgresBrokerOptions = {}): PostgresBroker {
  return new PostgresLogBroker(options)
}
