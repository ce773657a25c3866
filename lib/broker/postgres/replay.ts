/**
 * Resume after a `Last-Event-ID`, and the newest id.
 *
 * A replay never returns an event the reader has not yet delivered: it is
 * bounded at the reader's position, and what comes after reaches the stream as
 * live events through the hub's handoff. It is answered from the recent window
 * when the window holds the id (no query), else by one range query; concurrent
 * replays of one id share that query (a reconnect storm after a deploy asks the
 * same ids many times).
 */
import type { RecentWindow } from '../redis/window.js'
import type { BrokerEvent, BrokerReplay, TransactionClient } from '../types.js'
import { compareIds, parseId } from '../types.js'
import type { Database } from './connection.js'
import type { ResolvedOptions } from './options.js'
import type { EventRow, LogReader, LogState } from './reader.js'
import { eventOfRow } from './reader.js'
import type { Statements } from './schema.js'

/** A shared range query: the events after an id up to `bound` (all topics), or null when the id is gone or too old. */
interface Fetch {
  readonly bound: string | null
  readonly events: Promise<BrokerEvent[] | null>
}

interface RangeRow {
  trimmed: string
  id: string | null
  topic: string | null
  body: string | null
  key: string | null
}

function only(events: readonly BrokerEvent[], topics: readonly string[]): BrokerEvent[] {
  if (topics.length === 1) return events.filter((e) => e.topic === topics[0])
  const wanted = new Set(topics)
  return events.filter((e) => wanted.has(e.topic))
}

/** Answers `replay` and `lastId` for one broker, from its reader's position, its window, or the table. */
export class Replays {
  readonly #db: Database
  readonly #reader: LogReader
  readonly #window: RecentWindow
  readonly #options: ResolvedOptions
  readonly #sql: Statements
  readonly #state: LogState
  readonly #inFlight = new Map<string, Fetch>()

  constructor(
    db: Database,
    reader: LogReader,
    window: RecentWindow,
    options: ResolvedOptions,
    sql: Statements,
    state: LogState
  ) {
    this.#db = db
    this.#reader = reader
    this.#window = window
    this.#options = options
    this.#sql = sql
    this.#state = state
  }

  async replay(topics: readonly string[], lastId: string): Promise<BrokerReplay> {
    const parsed = parseId(lastId)
    if (parsed === null || parsed[0] !== this.#state.epoch) return this.#notFound()
    const bound = this.#reader.running ? this.#reader.position : null
    if (bound !== null) {
      if (lastId === bound) return { found: true, events: [] }
      if (compareIds(lastId, bound) > 0) {
        // Newer than what was delivered here: its events reach the stream live. It must exist, though.
        return (await this.#exists(parsed[1])) ? { found: true, events: [] } : this.#notFound()
      }
      // The window names the empty log's id as Redis does.
      const recent = this.#window.after(lastId === this.#state.empty ? '0-0' : lastId)
      if (recent !== null) return { found: true, events: only(recent, topics) }
    }
    const events = await this.#fetch(lastId, bound)
    return events === null ? this.#notFound() : { found: true, events: only(events, topics) }
  }

  /**
   * The newest id: the reader's position when it is current (or `published`,
   * this instance's newest committed publish, when that is later), else the
   * table's. For an empty log, `<epoch>-0`.
   */
  async lastId(published: string | null): Promise<string> {
    if (this.#reader.current()) {
      const at = this.#reader.position
      return published !== null && compareIds(published, at) > 0 ? published : at
    }
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

  async #notFound(): Promise<BrokerReplay> {
    // The hub's reset carries this id and its live events follow it: the reader's position fits exactly.
    return { found: false, head: this.#reader.running ? this.#reader.position : await this.lastId(null) }
  }

  async #exists(seq: number): Promise<boolean> {
    const reply = await this.#db.query(this.#sql.range, [seq, seq, 1])
    return (reply.rows[0] as RangeRow | undefined)?.id === String(seq)
  }

  async #fetch(lastId: string, bound: string | null): Promise<BrokerEvent[] | null> {
    let shared = this.#inFlight.get(lastId)
    if (shared === undefined) {
      const fetch: Fetch = { bound, events: this.#range(lastId, bound) }
      shared = fetch
      this.#inFlight.set(lastId, fetch)
      const done = () => {
        if (this.#inFlight.get(lastId) === fetch) this.#inFlight.delete(lastId)
      }
      fetch.events.then(done, done)
    }
    const events = await shared.events
    if (events === null || shared.bound === bound || bound === null) return events
    // Joined a query sent at an earlier position: add what the reader delivered since, up to ours.
    const since = shared.bound === null ? [] : this.#window.after(shared.bound)
    if (since === null) return this.#range(lastId, bound)
    const more = since.filter((e) => compareIds(e.id, bound) <= 0)
    return events.length + more.length > this.#options.replay ? null : [...events, ...more]
  }

  /**
   * The events after `lastId` up to `bound`: found when the id is still a row
   * (or is the empty log's id and nothing was ever removed) and at most
   * `replay` events follow it.
   */
  async #range(lastId: string, bound: string | null): Promise<BrokerEvent[] | null> {
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
      events.push(this.#window.get(this.#state.id(row.id as string)) ?? eventOfRow(this.#state, row as EventRow))
    }
    return events
  }
}
