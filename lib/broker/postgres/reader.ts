/**
 * The read loop: one connection of the broker's own `LISTEN`s on the table's
 * channel and reads the events after its position when woken (a publish's
 * `NOTIFY`, sent at its commit) or every `pollMs` without one, which also proves
 * the connection alive: a poll unanswered within `commandTimeoutMs` drops it,
 * and the loop reconnects with backoff and reads on from its position, so an
 * outage skips nothing still in the table.
 *
 * Each read also returns the table's state row in the same snapshot: a changed
 * `epoch` means the table was recreated (its events are all new to this
 * reader), and `trimmed` past the position means retention removed events this
 * instance never delivered: its listeners' `onGap` gets the head and delivery
 * goes on after it. The reader also runs retention now and then.
 */

import type { Listeners } from '../shared/listeners.js'
import { Pauses, retryDelay } from '../shared/timing.js'
import type { RecentWindow } from '../shared/window.js'
import type { BrokerEvent } from '../types.js'
import { brokerEvent } from '../types.js'
import type { Database, ListenClient } from './connection.js'
import { bounded } from './connection.js'
import type { PostgresBrokerLogger, ResolvedOptions } from './options.js'
import type { Statements } from './schema.js'

/** At most this many events per read. */
const BATCH = 1000
/** Whether PostgreSQL answered with an error (the statement failed, the connection is fine). */
function answered(err: unknown): boolean {
  return (err as { cause?: { severity?: unknown } }).cause?.severity === 'ERROR'
}

/** A row of the read statement. */
interface ReadRow {
  epoch: string
  trimmed: string
  id: string | null
  topic: string | null
  body: string | null
  key: string | null
}

/** What an event's row holds (its id as the sequence number). */
export interface EventRow {
  readonly id: string
  readonly topic: string
  readonly body: string
  readonly key?: string | null | undefined
}

/**
 * The event of a row, with its key when it has one. Every event the broker
 * produces (live, into the window, from a range query) is made here.
 */
export function eventOfRow(state: LogState, row: EventRow): BrokerEvent {
  return brokerEvent(state.id(row.id), row.topic, row.body, row.key)
}

/** The log's identity, shared by the broker's parts: ids are `<epoch>-<seq>`. */
export class LogState {
  epoch = 0
  /** The id before the first event of this table. */
  get empty(): string {
    return `${this.epoch}-0`
  }
  id(seq: string | number): string {
    return `${this.epoch}-${seq}`
  }
}

/** One reader per broker, started by the first `listen`. */
export class LogReader {
  readonly #db: Database
  readonly #options: ResolvedOptions
  readonly #sql: Statements
  readonly #state: LogState
  readonly #window: RecentWindow
  readonly #log: () => PostgresBrokerLogger
  readonly #listeners: Listeners
  readonly #pauses = new Pauses()
  #client: ListenClient | null = null
  #loop: Promise<void> | null = null
  /** The sequence number of the last event delivered (or skipped past). */
  #seq = 0
  /** A notification (or a full batch) says there is more to read now. */
  #dirty = false
  #lastRead = 0
  #lastTrim = 0
  #trimming = false
  #downSince: number | null = null
  #failures = 0
  /** Reads PostgreSQL refused in a row. */
  #refusals = 0
  #stopped = false

  constructor(
    db: Database,
    options: ResolvedOptions,
    sql: Statements,
    state: LogState,
    window: RecentWindow,
    listeners: Listeners,
    log: () => PostgresBrokerLogger
  ) {
    this.#db = db
    this.#options = options
    this.#sql = sql
    this.#state = state
    this.#window = window
    this.#listeners = listeners
    this.#log = log
  }

  get running(): boolean {
    return this.#loop !== null && !this.#stopped
  }

  /** The last id delivered to listeners. */
  get position(): string {
    return this.#state.id(this.#seq)
  }

  /** The position is the head as far as the database has said: connected, read within a poll, nothing notified since. */
  current(): boolean {
    return (
      this.running &&
      this.#client !== null &&
      !this.#dirty &&
      performance.now() - this.#lastRead < this.#options.pollMs + this.#options.commandTimeoutMs
    )
  }

  /** Connects, takes the head as the starting position, fills the window and starts the loop. */
  async start(): Promise<void> {
    const client = await this.#connect()
    try {
      const newest = await this.#query(client, this.#sql.newest, [Math.max(1, this.#window.size)])
      const rows = newest.rows as EventRow[]
      this.#seq = rows.length === 0 ? 0 : Number(rows[0]?.id)
      this.#window.clear()
      if (this.#seq === 0) this.#window.fromStart(this.#state.empty)
      else if (this.#window.size > 0) {
        for (let i = rows.length - 1; i >= 0; i--) this.#window.push(eventOfRow(this.#state, rows[i] as EventRow))
      }
    } catch (err) {
      this.#db.drop(client)
      throw err
    }
    this.#lastRead = performance.now()
    this.#client = client
    this.#loop = this.#run()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    this.#pauses.wake()
    if (this.#client !== null) this.#db.drop(this.#client)
    this.#client = null
    await this.#loop
  }

  /** A new listening connection: `LISTEN` before anything is read, so no commit after the read goes unnoticed. */
  async #connect(): Promise<ListenClient> {
    const client = await this.#db.listener()
    client.on('notification', (message) => {
      if ((this.#client !== null && client !== this.#client) || message.channel !== this.#options.table) return
      const seq = Number(message.payload)
      if (!(seq <= this.#seq)) this.#poke()
    })
    const broken = (err?: Error) => {
      if (client !== this.#client || this.#stopped) return
      this.#lost(client, err ?? new Error('the connection ended'))
    }
    client.on('error', broken)
    client.on('end', broken)
    try {
      await this.#query(client, `LISTEN "${this.#options.table.replace(/"/g, '""')}"`)
    } catch (err) {
      this.#db.drop(client)
      throw err
    }
    return client
  }

  #query(client: ListenClient, text: string, values?: unknown[]) {
    return bounded(
      () => client.query(text, values),
      this.#options.commandTimeoutMs,
      () =>
        `PostgreSQL at ${this.#options.target} did not answer the reader within ${this.#options.commandTimeoutMs} ms`
    )
  }

  #poke(): void {
    this.#dirty = true
    this.#pauses.wake()
  }

  /** The listening connection failed: drop it; the loop reconnects. */
  #lost(client: ListenClient, err: Error): void {
    if (this.#client === client) this.#client = null
    this.#db.drop(client)
    this.#down(err)
    this.#pauses.wake()
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      let client = this.#client
      if (client === null) {
        try {
          client = await this.#connect()
          if (this.#stopped) {
            this.#db.drop(client)
            break
          }
          this.#client = client
          this.#dirty = true
        } catch (err) {
          this.#down(err as Error)
          await this.#pauses.pause(retryDelay(this.#failures++))
          continue
        }
      }
      if (!this.#dirty) await this.#pauses.pause(this.#options.pollMs)
      if (this.#stopped || this.#client !== client) continue
      this.#dirty = false
      let rows: ReadRow[]
      try {
        rows = (await this.#query(client, this.#sql.read, [this.#seq, BATCH])).rows as ReadRow[]
      } catch (err) {
        if (this.#stopped || this.#client !== client) continue
        if (!answered(err)) {
          this.#lost(client, err as Error)
          continue
        }
        // PostgreSQL refused the read (the table was dropped, say): the connection is fine. Say it
        // once, retry slowly, and read on once it is fixed (a publish recreates the table).
        if (this.#refusals++ === 0) {
          this.#log().error({ err }, `fastify-html-sse: reading the PostgreSQL table ${this.#options.table} failed`)
        }
        await this.#pauses.pause(retryDelay(this.#refusals))
        this.#dirty = true
        continue
      }
      if (this.#stopped || this.#client !== client) continue
      this.#lastRead = performance.now()
      this.#refusals = 0
      this.#up()
      try {
        await this.#handle(client, rows)
      } catch (err) {
        if (!this.#stopped && this.#client === client) this.#lost(client, err as Error)
        continue
      }
      this.#maybeTrim()
    }
  }

  async #handle(client: ListenClient, rows: ReadRow[]): Promise<void> {
    const first = rows[0]
    if (first?.epoch == null) {
      // The state row was deleted by hand: nothing can be told until the table is recreated.
      return
    }
    const epoch = Number(first.epoch)
    if (epoch !== this.#state.epoch) {
      // The table was recreated under the reader: every event it holds is new.
      this.#log().info(
        { from: this.position },
        `fastify-html-sse: the PostgreSQL table ${this.#options.table} was recreated; reading it from its start`
      )
      this.#state.epoch = epoch
      this.#seq = 0
      this.#window.clear()
      this.#window.fromStart(this.#state.empty)
      this.#dirty = true
      return
    }
    if (Number(first.trimmed) > this.#seq) {
      await this.#gap(client, Number(first.trimmed))
      return
    }
    const events = rows.filter((r) => r.id !== null)
    if (events.length >= BATCH) this.#dirty = true
    await this.#deliver(events)
  }

  /** Retention removed events after the position: tell the listeners and go on after the head. */
  async #gap(client: ListenClient, trimmed: number): Promise<void> {
    const reply = await this.#query(client, this.#sql.head)
    const head = Math.max(Number((reply.rows[0] as { head: string | null }).head ?? 0), trimmed)
    const from = this.position
    this.#seq = head
    this.#window.clear()
    const at = this.position
    this.#log().warn(
      { from, head: at },
      `fastify-html-sse: retention removed events of ${this.#options.table} this instance had not delivered (it fell more than retentionMs behind); its streams get a reset`
    )
    this.#listeners.gap(at)
  }

  /** Hands each event to every listener, yielding to I/O whenever a socket is full. */
  #deliver(rows: ReadRow[]): Promise<void> {
    return this.#listeners.deliver(
      rows,
      (row) => {
        this.#seq = Number(row.id)
        const event = eventOfRow(this.#state, row as EventRow)
        this.#window.push(event)
        return event
      },
      () => this.#stopped
    )
  }

  /** Removes events older than `retentionMs`, every quarter of it (1 s to 30 s), on a pool connection. */
  #maybeTrim(): void {
    const every = Math.min(Math.max(this.#options.retentionMs / 4, 1000), 30_000)
    const now = performance.now()
    if (this.#trimming || now - this.#lastTrim < every) return
    this.#lastTrim = now
    this.#trimming = true
    this.#db
      .query(this.#sql.trim, [this.#options.retentionMs])
      .catch(() => {})
      .finally(() => {
        this.#trimming = false
      })
  }

  #down(err: Error): void {
    if (this.#downSince !== null || this.#stopped) return
    this.#downSince = Date.now()
    this.#log().warn(
      { err },
      `fastify-html-sse: lost the connection to PostgreSQL at ${this.#options.target}; live delivery waits until it is back; reconnecting`
    )
  }

  #up(): void {
    this.#failures = 0
    if (this.#downSince === null) return
    const downMs = Date.now() - this.#downSince
    this.#downSince = null
    this.#log().info(
      { downMs },
      `fastify-html-sse: reconnected to PostgreSQL at ${this.#options.target} after ${downMs} ms`
    )
  }
}
