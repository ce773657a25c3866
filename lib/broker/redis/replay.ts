/**
 * What a replay asks of Redis (the decisions are in `../shared/replays.ts`): the
 * events after an id up to the reader's position (`XRANGE <lastId> <position>`),
 * whether an id newer than the position exists (`XRANGE <id> <id>`), and the
 * newest id (`XREVRANGE`). Ids are Redis's own; the empty stream's is `0-0`.
 */
import type { LogQueries } from '../shared/replays.js'
import type { RecentWindow } from '../shared/window.js'
import type { BrokerEvent } from '../types.js'
import { parseId } from '../types.js'
import type { Connections } from './connection.js'
import type { ResolvedOptions } from './options.js'
import { type StreamReader, streamInfo } from './reader.js'
import type { Entry } from './reply.js'
import { entriesOf, eventOf } from './reply.js'

/** The queries of one Redis broker's replays. */
export class StreamQueries implements LogQueries {
  readonly #conns: Connections
  readonly reader: StreamReader
  readonly window: RecentWindow
  readonly #options: ResolvedOptions

  constructor(conns: Connections, reader: StreamReader, window: RecentWindow, options: ResolvedOptions) {
    this.#conns = conns
    this.reader = reader
    this.window = window
    this.#options = options
  }

  get replay(): number {
    return this.#options.replay
  }

  owns(lastId: string): boolean {
    return parseId(lastId) !== null
  }

  async exists(id: string): Promise<boolean> {
    const client = await this.#conns.commands()
    return entriesOf(await this.#conns.send(client, ['XRANGE', this.#options.key, id, id])).length > 0
  }

  async head(): Promise<string> {
    const client = await this.#conns.commands()
    const reply = await this.#conns.send(client, ['XREVRANGE', this.#options.key, '+', '-', 'COUNT', '1'])
    return entriesOf(reply)[0]?.[0] ?? '0-0'
  }

  range(lastId: string, bound: string | null): Promise<BrokerEvent[] | null> {
    return lastId === '0-0' ? this.#rangeFromStart(bound) : this.#rangeAfter(lastId, bound)
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

  async #rangeAfter(lastId: string, bound: string | null): Promise<BrokerEvent[] | null> {
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
      const cached = this.window.get(id)
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
