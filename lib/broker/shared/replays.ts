/**
 * Resume after a `Last-Event-ID`, and the newest id, for a broker whose
 * events are one ordered log (a Redis Stream, a PostgreSQL table) read by one
 * reader per instance.
 *
 * A replay never returns an event the reader has not yet delivered: it is
 * bounded at the reader's position, and what comes after reaches the stream as
 * live events through the hub's handoff, so the two never overlap. It is
 * answered from the recent window when the window holds the id (nothing asked
 * of the store), else by one range query up to the position; concurrent
 * replays of one id share that query (a reconnect storm after a deploy asks the
 * same ids many times). An id newer than the position only needs to exist; the
 * concurrent checks of one such id share their query too.
 */
import type { BrokerEvent, BrokerReplay } from '../types.js'
import { compareIds } from '../types.js'
import type { RecentWindow } from './window.js'

/** What replays need of one log broker: its reader, its window and the queries of its store. */
export interface LogQueries {
  /** The reader: while it runs, its position bounds every replay. */
  readonly reader: { readonly running: boolean; readonly position: string; current(): boolean }
  readonly window: RecentWindow
  /** The `replay` option: at most this many events after an id. */
  readonly replay: number
  /** Whether `lastId` can name an event of this log (well formed; of the table's epoch). */
  owns(lastId: string): boolean
  /** Whether `id`, newer than the reader's position, is in the log. */
  exists(id: string): Promise<boolean>
  /** The events after `lastId` up to `bound` (all topics), or null when the id is gone or more than `replay` follow it. */
  range(lastId: string, bound: string | null): Promise<BrokerEvent[] | null>
  /** The newest id, asked of the store. */
  head(): Promise<string>
}

/** A shared range query: the events after an id up to `bound`, or null when the id is gone or too old. */
interface Fetch {
  readonly bound: string | null
  readonly events: Promise<BrokerEvent[] | null>
}

function only(events: readonly BrokerEvent[], topics: readonly string[]): BrokerEvent[] {
  if (topics.length === 1) return events.filter((e) => e.topic === topics[0])
  const wanted = new Set(topics)
  return events.filter((e) => wanted.has(e.topic))
}

/**
 * `make()`, or what an earlier call made for `key` while `pending(it)` has not
 * settled: concurrent callers share one query.
 */
function shared<T>(running: Map<string, T>, key: string, make: () => T, pending: (it: T) => Promise<unknown>): T {
  let it = running.get(key)
  if (it === undefined) {
    const made = make()
    it = made
    running.set(key, made)
    const done = () => {
      if (running.get(key) === made) running.delete(key)
    }
    pending(made).then(done, done)
  }
  return it
}

/** Answers `replay` and `lastId` for one log broker, from its reader's position, its window, or its store. */
export class Replays {
  readonly #queries: LogQueries
  readonly #fetches = new Map<string, Fetch>()
  readonly #checks = new Map<string, Promise<boolean>>()

  constructor(queries: LogQueries) {
    this.#queries = queries
  }

  async replay(topics: readonly string[], lastId: string): Promise<BrokerReplay> {
    const queries = this.#queries
    if (!queries.owns(lastId)) return this.#notFound()
    const bound = queries.reader.running ? queries.reader.position : null
    if (bound !== null) {
      if (lastId === bound) return { found: true, events: [] }
      if (compareIds(lastId, bound) > 0) {
        // Newer than what was delivered here: its events reach the stream live. It must exist, though.
        const exists = await shared(
          this.#checks,
          lastId,
          () => queries.exists(lastId),
          (p) => p
        )
        return exists ? { found: true, events: [] } : this.#notFound()
      }
      const recent = queries.window.after(lastId)
      if (recent !== null) return { found: true, events: only(recent, topics) }
    }
    const events = await this.#fetch(lastId, bound)
    return events === null ? this.#notFound() : { found: true, events: only(events, topics) }
  }

  /**
   * The newest id: the reader's position when it is current (or `published`,
   * this instance's newest publish, when that is later), else the store's.
   */
  lastId(published: string | null): Promise<string> {
    const reader = this.#queries.reader
    if (!reader.current()) return this.#queries.head()
    const at = reader.position
    return Promise.resolve(published !== null && compareIds(published, at) > 0 ? published : at)
  }

  async #notFound(): Promise<BrokerReplay> {
    // The hub's reset carries this id and its live events follow it: the reader's position fits exactly.
    const reader = this.#queries.reader
    return { found: false, head: reader.running ? reader.position : await this.#queries.head() }
  }

  async #fetch(lastId: string, bound: string | null): Promise<BrokerEvent[] | null> {
    const fetch = shared(
      this.#fetches,
      lastId,
      (): Fetch => ({ bound, events: this.#queries.range(lastId, bound) }),
      (f) => f.events
    )
    const events = await fetch.events
    if (events === null || fetch.bound === bound || bound === null) return events
    // Joined a query sent before the reader ran: it went up to the store's head then, not to ours.
    if (fetch.bound === null) return this.#queries.range(lastId, bound)
    // Joined a query sent at an earlier position: add what the reader delivered since, up to ours.
    const since = this.#queries.window.after(fetch.bound)
    if (since === null) return this.#queries.range(lastId, bound)
    const more = since.filter((e) => compareIds(e.id, bound) <= 0)
    return events.length + more.length > this.#queries.replay ? null : [...events, ...more]
  }
}
