/**
 * What a replay asks of the table (the decisions are in `../shared/replays.ts`):
 * the events after an id up to the reader's position, whether an id newer than
 * the position exists, and the newest id, in the app's transaction's snapshot
 * too. Ids are `<epoch>-<seq>`; the window names the empty table's `0-0`.
 */
import type { LogQueries } from '../shared/replays.js'
import type { RecentWindow } from '../shared/window.js'
import type { BrokerEvent, TransactionClient } from '../types.js'
import { parseId } from '../types.js'
import type { Database } from './connection.js'
import type { ResolvedOptions } from './options.js'
import type { EventRow, LogReader, LogState } from './reader.js'
import { eventOfRow } from './reader.js'
import type { Statements } from './schema.js'

interface RangeRow {
  trimmed: string
  id: string | null
  topic: string | null
  body: string | null
  key: string | null
}

/** The queries of one PostgreSQL broker's replays. */
export class TableQueries implements LogQueries {
  readonly #db: Database
  readonly reader: LogReader
  readonly window: RecentWindow
  readonly #options: ResolvedOptions
  readonly #sql: Statements
  readonly #state: LogState

  constructor(
    db: Database,
    reader: LogReader,
    window: RecentWindow,
    options: ResolvedOptions,
    sql: Statements,
    state: LogState
  ) {
    this.#db = db
    this.reader = reader
    this.window = window
    this.#options = options
    this.#sql = sql
    this.#state = state
  }

  get replay(): number {
    return this.#options.replay
  }

  owns(lastId: string): boolean {
    return parseId(lastId)?.[0] === this.#state.epoch
  }

  async exists(id: string): Promise<boolean> {
    const seq = Number(id.slice(id.indexOf('-') + 1))
    const reply = await this.#db.query(this.#sql.range, [seq, seq, 1])
    return (reply.rows[0] as RangeRow | undefined)?.id === String(seq)
  }

  head(): Promise<string> {
    return this.#head((text) => this.#db.query(text))
  }

  /** The newest id this transaction sees: its snapshot is a prefix of the log (see schema.ts). */
  lastIdIn(transaction: TransactionClient): Promise<string> {
    return this.#head((text) => this.#db.inTransaction(transaction, text, []))
  }

  async #head(run: (text: string) => Promise<{ rows: readonly unknown[] }>): Promise<string> {
    const row = (await run(this.#sql.head)).rows[0] as { head: string | null; epoch: string | null } | undefined
    const epoch = Number(row?.epoch ?? this.#state.epoch)
    return `${epoch}-${row?.head ?? 0}`
  }

  /**
   * The events after `lastId` up to `bound`: found when the id is still a row
   * (or is the empty log's id and nothing was ever removed) and at most
   * `replay` events follow it.
   */
  async range(lastId: string, bound: string | null): Promise<BrokerEvent[] | null> {
    const seq = Number(lastId.slice(lastId.indexOf('-') + 1))
    const upTo = bound === null ? '9223372036854775807' : bound.slice(bound.indexOf('-') + 1)
    const replay = this.#options.replay
    const rows = (await this.#db.query(this.#sql.range, [seq, upTo, replay + 2])).rows as RangeRow[]
    const trimmed = Number(rows[0]?.trimmed ?? 0)
    const found = rows.filter((r) => r.id !== null)
    let from: number
    if (seq === 0) {
      if (trimmed > 0) return null
      from = 0
    } else {
      if (found[0]?.id !== String(seq)) return null
      from = 1
    }
    if (found.length - from > replay) return null
    const events: BrokerEvent[] = []
    for (let i = from; i < found.length; i++) {
      const row = found[i] as RangeRow
      events.push(this.window.get(this.#state.id(row.id as string)) ?? eventOfRow(this.#state, row as EventRow))
    }
    return events
  }
}
