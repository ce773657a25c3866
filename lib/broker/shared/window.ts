/**
 * The recent window: the last events this instance's reader delivered, in
 * order, so most resumes are answered from memory and a replayed frame is the
 * very Buffer delivered live.
 */
import type { BrokerEvent } from '../types.js'

/** The last `size` delivered events, indexed by id. */
export class RecentWindow {
  readonly #size: number
  #events: BrokerEvent[] = []
  /** Index in `#events` of the oldest event still in the window. */
  #start = 0
  /** Absolute position (count since the last clear) of each event, by id. */
  readonly #at = new Map<string, number>()
  /** Absolute position of `#events[0]`. */
  #base = 0
  /** It holds every entry of the stream since its start (the reader began at `#startId` and nothing left). */
  #whole = false
  /** The log's id before its first event: `0-0` for a Redis stream, `<epoch>-0` for a table. */
  #startId = '0-0'

  constructor(size: number) {
    this.#size = size
  }

  /** A window for a `replay` option: the id a resume names and the `replay` events after it. */
  static forReplay(replay: number): RecentWindow {
    return new RecentWindow(replay === 0 ? 0 : replay + 1)
  }

  /** How many events it keeps. */
  get size(): number {
    return this.#size
  }

  /** Adds the newest delivered event; the oldest leaves once the window is full. */
  push(event: BrokerEvent): void {
    if (this.#size === 0) return
    this.#at.set(event.id, this.#base + this.#events.length)
    this.#events.push(event)
    if (this.#events.length - this.#start > this.#size) {
      const gone = this.#events[this.#start] as BrokerEvent
      this.#at.delete(gone.id)
      this.#whole = false
      this.#start++
      // Compact now and then rather than shifting the array at every event.
      if (this.#start >= this.#size) {
        this.#events = this.#events.slice(this.#start)
        this.#base += this.#start
        this.#start = 0
      }
    }
  }

  /** The event with this id, if it is in the window. */
  get(id: string): BrokerEvent | undefined {
    const at = this.#at.get(id)
    return at === undefined ? undefined : this.#events[at - this.#base]
  }

  /**
   * The events after `id` (all topics, in order) when `id` is in the window,
   * else null: the window cannot tell what followed it. The id before the
   * log's first event (`fromStart`) is in the window while it holds the whole
   * log and no more entries than any other id can have after it.
   */
  after(id: string): BrokerEvent[] | null {
    if (id === this.#startId) {
      return this.#whole && this.#events.length - this.#start < this.#size ? this.#events.slice(this.#start) : null
    }
    const at = this.#at.get(id)
    if (at === undefined) return null
    return this.#events.slice(at - this.#base + 1)
  }

  /**
   * The reader starts at the log's beginning, `startId` the id before its first
   * event: from now on the window holds all of it, until it is full.
   */
  fromStart(startId = '0-0'): void {
    this.#startId = startId
    this.#whole = this.#events.length === this.#start
  }

  /** Forgets every event: after a gap, what it held no longer leads to the next event. */
  clear(): void {
    this.#whole = false
    this.#events = []
    this.#start = 0
    this.#base = 0
    this.#at.clear()
  }
}
