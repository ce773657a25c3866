/**
 * Resume after a `Last-Event-ID`, and the newest id.
 *
 * A replay never returns an event the reader has not yet delivered: it is
 * bounded at the reader's position, and what comes after reaches the stream as
 * live events through the hub's handoff, so the two never overlap. It is
 * answered from the recent window when the window holds the id (no Redis
 * command), from `XRANGE <lastId> <position>` otherwise; concurrent replays of
 * one id share that command (a reconnect storm after a deploy asks the same
 * ids many times). An id newer than the position only needs to exist; the
 * concurrent checks of one such id share their `XRANGE <id> <id>` too.
 */
import type { BrokerEvent, BrokerReplay } from '../types.js'
import { compareIds, parseId } from '../types.js'
import type { Connections } from './connection.js'
import type { ResolvedOptions } from './options.js'
import { type StreamReader, streamInfo } from './reader.js'
import type { Entry } from './reply.js'
import { entriesOf, eventOf } from './reply.js'
import type { RecentWindow } from './window.js'

/** A shared `XRANGE`: the events after an id up to `bound` (all topics), or null when the id is gone or too old. */
interface Fetch {
  readonly bound: string | null
  readonly events: Promise<BrokerEvent[] | null>
}

function only(events: readonly BrokerEvent[], topics: readonly string[]): BrokerEvent[] {
  if (topics.length === 1) return events.filter((e) => e.topic === topics[0])
  const wanted = new Set(topics)
  return events.filter((e) => wanted.has(e.topic))
}

/** Answers `replay` and `lastId` for one broker, from its reader's position, its window, or Redis. */
export class Replays {
  readonly #conns: Connections
  readonly #reader: StreamReader
  readonly #window: RecentWindow
  readonly #options: ResolvedOptions
  readonly #inFlight = new Map<string, Fetch>()
  /** Existence checks of ids newer than the position, by id, while their command runs. */
  readonly #checks = new Map<string, Promise<boolean>>()

  constructor(conns: Connections, reader: StreamReader, window: RecentWindow, options: ResolvedOptions) {
    this.#conns = conns
    this.#reader = reader
    this.#window = window
    this.#options = options
  }

  async replay(topics: readonly string[], lastId: string): Promise<BrokerReplay> {
    if (parseId(lastId) === null) return this.#notFound()
    const bound = this.#reader.running ? this.#reader.position : null
    if (bound !== null) {
      if (lastId === bound) return { found: true, events: [] }
      if (compareIds(lastId, bound) > 0) {
        // Newer than what was delivered here: its events reach the stream live. It must exist, though.
        return (await this.#exists(lastId)) ? { found: true, events: [] } : this.#notFound()
      }
      const recent = this.#window.after(lastId)
      if (recent !== null) return { found: true, events: only(recent, topics) }
    }
    const events = await this.#fetch(lastId, bound)
    return events === null ? this.#notFound() : { found: true, events: only(events, topics) }
  }

  /**
   * The newest id: the reader's position when it is current (or `published`,
   * this instance's newest publish, when that is later), else Redis's. For an
   * empty log, `0-0`: the position before the first event.
   */
  async lastId(published = '0-0'): Promise<string> {
    if (this.#reader.current()) {
      const at = this.#reader.position
      return compareIds(published, at) > 0 ? published : at
    }
    const client = await this.#conns.commands()
    const reply = await this.#conns.send(client, ['XREVRANGE', this.#options.key, '+', '-', 'COUNT', '1'])
    return entriesOf(reply)[0]?.[0] ?? '0-0'
  }

  async #notFound(): Promise<BrokerReplay> {
    // The hub's reset carries this id and its live events follow it: the reader's position fits exactly.
    return { found: false, head: this.#reader.running ? this.#reader.position : await this.lastId() }
  }

  /**
   * The events after `0-0` (the id `lastId()` gives for an empty log) up to
   * `bound`, when none was ever removed and they fit in `replay`.
   */
  async #rangeFromStart(bound: string | null): Promise<BrokerEvent[] | null> {
    const client = await this.#conns.commands()
    const key = this.#options.key
    const replay = this.#options.replay
    const range = await this.#conns.send(client, ['XRANGE', key, '-', bound ?? '+', 'COUNT', String(replay + 1)])
    // Asked after the range on the same connection: when nothing was ever removed, the range was whole.
    const info = await streamInfo(this.#conns.send(client, ['XINFO', 'STREAM', key]))
    const entries = entriesOf(range)
    const removed = info === null ? 0 : info.entriesAdded - info.length
    return removed > 0 || entries.length > replay ? null : this.#events(entries, 0)
  }

  /** Whether `id` is an entry; concurrent checks of one id share one command. */
  #exists(id: string): Promise<boolean> {
    let check = this.#checks.get(id)
    if (check === undefined) {
      const started = this.#lookup(id)
      check = started
      this.#checks.set(id, started)
      const done = () => {
        if (this.#checks.get(id) === started) this.#checks.delete(id)
      }
      started.then(done, done)
    }
    return check
  }

  async #lookup(id: string): Promise<boolean> {
    const client = await this.#conns.commands()
    return entriesOf(await this.#conns.send(client, ['XRANGE', this.#options.key, id, id])).length > 0
  }

  async #fetch(lastId: string, bound: string | null): Promise<BrokerEvent[] | null> {
    let shared = this.#inFlight.get(lastId)
    if (shared === undefined) {
      const fetch: Fetch = { bound, events: this.#read(lastId, bound) }
      shared = fetch
      this.#inFlight.set(lastId, fetch)
      const done = () => {
        if (this.#inFlight.get(lastId) === fetch) this.#inFlight.delete(lastId)
      }
      fetch.events.then(done, done)
    }
    const events = await shared.events
    if (events === null || shared.bound === bound || bound === null) return events
    // Joined a command sent at an earlier position: add what the reader delivered since, up to ours.
    const since = shared.bound === null ? [] : this.#window.after(shared.bound)
    if (since === null) return this.#read(lastId, bound)
    const more = since.filter((e) => compareIds(e.id, bound) <= 0)
    return events.length + more.length > this.#options.replay ? null : [...events, ...more]
  }

  #read(lastId: string, bound: string | null): Promise<BrokerEvent[] | null> {
    return lastId === '0-0' ? this.#rangeFromStart(bound) : this.#range(lastId, bound)
  }

  async #range(lastId: string, bound: string | null): Promise<BrokerEvent[] | null> {
    const client = await this.#conns.commands()
    const replay = this.#options.replay
    const reply = await this.#conns.send(client, [
      'XRANGE',
      this.#options.key,
      lastId,
      bound ?? '+',
      'COUNT',
      String(replay + 2)
    ])
    const entries = entriesOf(reply)
    // The id must still be an entry, and at most `replay` events may follow it.
    if (entries[0]?.[0] !== lastId || entries.length - 1 > replay) return null
    return this.#events(entries, 1)
  }

  /** The events of `entries` from index `from`, the window's own where it holds them. */
  #events(entries: Entry[], from: number): BrokerEvent[] {
    const events: BrokerEvent[] = []
    for (let i = from; i < entries.length; i++) {
      const [id, fields] = entries[i] as Entry
      const cached = this.#window.get(id)
      if (cached !== undefined) {
        events.push(cached)
        continue
      }
      const event = eventOf(id, fields)
      if (event !== undefined) events.push(event)
    }
    return events
  }
}
