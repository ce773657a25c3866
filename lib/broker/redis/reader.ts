/**
 * The read loop: one `XREAD BLOCK` at a time on the broker's own connection,
 * from the last id it delivered, so an outage skips nothing still in the
 * stream. It owns the reader's position and gap detection, and fills the
 * recent window; the listeners and the pace of delivery are
 * `../shared/listeners.ts`.
 *
 * Gap detection. The stream is trimmed by time (`retentionMs`, see
 * publish), so a reader whose batch spans less than half of it, and is not
 * full, cannot have lost anything: every trimmed entry is older than the head
 * minus `retentionMs`. Only a full batch (the reader is at least `BATCH`
 * behind), a batch spanning `retentionMs / 2` or more (the reader stalled or
 * the stream was idle), or the first batch after a reconnect asks Redis with
 * one `XINFO STREAM`: `entries-added - length` is how many entries were ever
 * removed, and the reader knows the sequence number of its position (from
 * `entries-added` when it started, plus what it read since). When entries
 * after its position were removed, it tells its listeners' `onGap` the head
 * (`last-generated-id`), forgets the recent window and goes on after the head.
 */
import { Once } from '../shared/broker.js'
import type { Listeners } from '../shared/listeners.js'
import { Pauses, retryDelay, unavailable } from '../shared/timing.js'
import type { RecentWindow } from '../shared/window.js'
import { compareIds } from '../types.js'
import type { Connections } from './connection.js'
import type { RedisBrokerLogger, RedisClient, ResolvedOptions } from './options.js'
import type { Entry, StreamInfo } from './reply.js'
import { entriesOf, entriesOfRead, eventOf, streamInfoOf } from './reply.js'

/** The answer to an `XINFO STREAM` command, decoded; null when the key does not exist. */
export async function streamInfo(command: Promise<unknown>): Promise<StreamInfo | null> {
  let reply: unknown
  try {
    reply = await command
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause ?? err
    if (/no such key/i.test((cause as Error).message)) return null
    throw err
  }
  try {
    return streamInfoOf(reply)
  } catch (err) {
    throw unavailable((err as Error).message, err)
  }
}

/** At most this many entries per `XREAD`. */
const BATCH = 1000

/** The milliseconds part of an id. */
function msOf(id: string): number {
  return Number(id.slice(0, id.indexOf('-')))
}

/** One reader per broker, started by the first `listen`. */
export class StreamReader {
  readonly #conns: Connections
  readonly #options: ResolvedOptions
  readonly #window: RecentWindow
  readonly #log: () => RedisBrokerLogger
  readonly #listeners: Listeners
  readonly #pauses = new Pauses()
  #client: RedisClient | null = null
  #loop: Promise<void> | null = null
  readonly #started = new Once(() => this.#start())
  /** The id of the last entry delivered (or skipped past): the next XREAD starts after it. */
  #position = '0-0'
  /** How many entries the stream had ever received up to `#position` (`entries-added`). */
  #seq = 0
  /** Check for a gap at the next batch: set after a (re)connect. */
  #check = false
  /** The stream may have changed under the reader: it reconnected. */
  #reconnected = false
  /** An XREAD is on the wire; when it was sent; whether the last one came back full. */
  #waiting = false
  #sentAt = 0
  #full = false
  #stopped = false

  constructor(
    conns: Connections,
    options: ResolvedOptions,
    window: RecentWindow,
    listeners: Listeners,
    log: () => RedisBrokerLogger
  ) {
    this.#conns = conns
    this.#options = options
    this.#window = window
    this.#listeners = listeners
    this.#log = log
  }

  /** The reader is running: its position bounds replays. */
  get running(): boolean {
    return this.#loop !== null && !this.#stopped
  }

  /** The last id delivered to listeners ('0-0' before any). */
  get position(): string {
    return this.#position
  }

  /**
   * The position is the head of the log as far as Redis has said: an XREAD
   * sent less than `blockMs` ago is waiting on a healthy connection, and the
   * last one was not full.
   */
  current(): boolean {
    return (
      this.running &&
      this.#waiting &&
      !this.#full &&
      this.#client?.isReady === true &&
      performance.now() - this.#sentAt < this.#options.blockMs
    )
  }

  /**
   * Connects, takes the head as the starting position and starts the loop;
   * once: a call while it starts, or after, shares that start (the broker may
   * call again when its command connection failed beside it). Again after a
   * failed start.
   */
  start(): Promise<void> {
    return this.#started.get()
  }

  async #start(): Promise<void> {
    const client = await this.#conns.reader()
    try {
      const info = await this.#info(client, true)
      this.#position = info?.lastGenerated ?? '0-0'
      this.#seq = info?.entriesAdded ?? 0
      if (this.#position === '0-0') this.#window.fromStart()
      else if (info !== null && info.length > 0) await this.#prefill(client)
    } catch (err) {
      this.#conns.drop(client)
      throw err
    }
    client.on('ready', () => {
      this.#reconnected = true
      this.#pauses.wake()
    })
    this.#client = client
    this.#loop = this.#run(client)
  }

  /**
   * Fills the recent window with the newest entries up to the starting
   * position (one `XREVRANGE`), so that the resumes of a reconnect storm after
   * a deploy are answered from memory, not one `XRANGE` each.
   */
  async #prefill(client: RedisClient): Promise<void> {
    const size = this.#window.size
    if (size === 0) return
    const reply = await this.#conns.send(client, [
      'XREVRANGE',
      this.#options.key,
      this.#position,
      '-',
      'COUNT',
      String(size)
    ])
    const entries = entriesOf(reply)
    for (let i = entries.length - 1; i >= 0; i--) {
      const [id, fields] = entries[i] as Entry
      const event = eventOf(id, fields)
      if (event !== undefined) this.#window.push(event)
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true
    this.#pauses.wake()
    // The reader is blocked in XREAD: only dropping its socket ends that at once.
    if (this.#client !== null) this.#conns.drop(this.#client)
    await this.#loop
  }

  async #run(client: RedisClient): Promise<void> {
    let failures = 0
    while (!this.#stopped) {
      if (!client.isReady) {
        await this.#conns.ready(client)
        continue
      }
      try {
        if (this.#reconnected) {
          this.#reconnected = false
          await this.#resync(client)
        }
        const from = this.#position
        this.#waiting = true
        this.#sentAt = performance.now()
        const reply = await client.sendCommand([
          'XREAD',
          'COUNT',
          String(BATCH),
          'BLOCK',
          String(this.#options.blockMs),
          'STREAMS',
          this.#options.key,
          from
        ])
        this.#waiting = false
        failures = 0
        const entries = entriesOfRead(reply)
        this.#full = entries.length >= BATCH
        if (entries.length === 0 || this.#stopped) continue
        if (this.#suspect(from, entries) && (await this.#gap(client, entries))) continue
        await this.#deliver(entries)
      } catch (err) {
        this.#waiting = false
        if (this.#stopped) break
        // A dropped socket: node-redis reconnects, and `ready` resyncs.
        if (!client.isReady) continue
        // Redis answered with an error (e.g. the key is not a stream): retry slowly, say it once,
        // and check the next batch, as the key may be recreated meanwhile.
        this.#check = true
        if (failures++ === 0) {
          this.#log().error({ err }, `fastify-html-sse: reading the Redis stream ${this.#options.key} failed`)
        }
        await this.#pauses.pause(retryDelay(failures))
      }
    }
  }

  /** Whether a batch read after `from` may have missed trimmed entries: see the module comment. */
  #suspect(from: string, entries: Entry[]): boolean {
    if (this.#check || entries.length >= BATCH) return true
    const last = (entries.at(-1) as Entry)[0]
    return msOf(last) - msOf(from) >= this.#options.retentionMs / 2
  }

  /**
   * Asks Redis whether entries between the position and this batch were
   * removed. On a gap, tells the listeners and moves to the head; returns
   * whether the batch was skipped.
   */
  async #gap(client: RedisClient, entries: Entry[]): Promise<boolean> {
    const info = await this.#info(client, false)
    this.#check = false
    if (info === null) return false
    const first = this.#firstSeq(info, entries)
    if (first !== null && first <= this.#seq + 1) {
      this.#seq = first - 1
      return false
    }
    const head = info.lastGenerated
    this.#log().warn(
      { from: this.#position, head, removed: info.entriesAdded - info.length },
      `fastify-html-sse: the Redis stream ${this.#options.key} was trimmed past this instance's position (it fell more than retentionMs behind); its streams get a reset`
    )
    this.#window.clear()
    this.#position = head
    this.#seq = info.entriesAdded
    this.#listeners.gap(head)
    return true
  }

  /**
   * The sequence number of the batch's first entry, from where the stream's
   * oldest entry sits in the batch; null when it cannot be told (everything
   * the batch holds was trimmed since it was read).
   */
  #firstSeq(info: StreamInfo, entries: Entry[]): number | null {
    // More entries read than the stream ever received: it was recreated under the reader.
    if (this.#seq > info.entriesAdded) return null
    const oldest = info.entriesAdded - info.length + 1
    const firstId = (entries[0] as Entry)[0]
    if (info.first === null) {
      // Empty now: the batch is the tail of the stream when it ends at the head.
      return (entries.at(-1) as Entry)[0] === info.lastGenerated ? info.entriesAdded - entries.length + 1 : null
    }
    if (compareIds(info.first, firstId) <= 0) {
      if (info.first === firstId && compareIds(info.first, this.#position) > 0) return oldest
      // The position, or an entry the XREAD did not return, is still there: nothing after it was trimmed.
      return this.#seq + 1
    }
    const at = entries.findIndex(([id]) => id === info.first)
    return at === -1 ? null : oldest - at
  }

  /**
   * After a reconnect: when the stream is gone or its ids went back (Redis
   * restarted without persistence, the key was recreated), every entry it
   * holds is new to this reader, so read it from its start. Either way, check
   * the next batch for a gap.
   */
  async #resync(client: RedisClient): Promise<void> {
    const info = await this.#info(client, false)
    this.#check = true
    if (this.#position === '0-0') return
    if (info !== null && compareIds(info.lastGenerated, this.#position) >= 0) return
    this.#log().info(
      { lastId: this.#position },
      `fastify-html-sse: the Redis stream ${this.#options.key} no longer holds the last delivered id; reading it from its start`
    )
    this.#position = '0-0'
    this.#seq = 0
    this.#window.clear()
    this.#window.fromStart()
  }

  /** `XINFO STREAM`, or null when the key does not exist. */
  #info(client: RedisClient, bounded: boolean): Promise<StreamInfo | null> {
    const args = ['XINFO', 'STREAM', this.#options.key]
    // At start a frozen server must fail the start; later the socket timeout watches the reader.
    return streamInfo(bounded ? this.#conns.send(client, args) : client.sendCommand(args))
  }

  /** Hands each entry to every listener, yielding to I/O whenever a socket is full. */
  #deliver(entries: Entry[]): Promise<void> {
    return this.#listeners.deliver(
      entries,
      ([id, fields]) => {
        this.#position = id
        this.#seq++
        const event = eventOf(id, fields)
        if (event !== undefined) this.#window.push(event)
        return event
      },
      () => this.#stopped
    )
  }
}
