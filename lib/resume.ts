/**
 * Resume after `Last-Event-ID`: the replay, and its handoff to live delivery.
 *
 * A resuming stream is subscribed at once, so nothing published meanwhile is
 * missed, but live events are held until the replay is written (up to
 * `maxBufferedBytes`; past that they are let go and the stream ends after the
 * replay with a hint, so its client resumes them). Held events the replay
 * already carried are skipped by id, and so are later deliveries up to the
 * replay's end when the broker had not delivered them yet: neither a gap nor
 * a duplicate can follow.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Broker, BrokerEvent } from './broker/types.js'
import { compareIds } from './broker/types.js'
import type { Counters } from './counters.js'
import { resetFrame } from './frame.js'
import type { Sink } from './sink.js'

/** Live events held while the replay is under way; `dropped`: the newest let go, or null. */
export interface Replaying {
  readonly kind: 'replaying'
  held: BrokerEvent[]
  bytes: number
  dropped: string | null
}

/** Live; deliveries up to `through` are skipped (the stream has them already). */
export interface Skipping {
  readonly kind: 'skipping'
  readonly through: string
}

/** Where a stream is in its resume: null once plainly live. */
export type Handoff = Replaying | Skipping | null

/** The hub's record of one stream: the sink and the state the hub keeps for it. */
export interface Entry {
  readonly sink: Sink
  /** Its topics: none, one (most streams), or several. */
  topics: string | Set<string> | null
  handoff: Handoff
}

/** What the resume needs to know. */
export interface ResumeOptions {
  maxBufferedBytes: number
  /** The `retry:` hint after a failed or overflowing resume is drawn from `[0, this)`. */
  resumeRetryMs: number
}

function frameOf(event: BrokerEvent): Buffer {
  return event.frame
}

/** The frames of `events` as one Buffer: one write for a whole replay. */
export function joined(events: readonly BrokerEvent[]): Buffer {
  return events.length === 1 ? (events[0] as BrokerEvent).frame : Buffer.concat(events.map(frameOf))
}

/**
 * A replay without the keyed events that a later one of the same topic and key
 * supersedes: a client that missed several gets only the newest, in its place.
 */
export function supersede(events: readonly BrokerEvent[]): readonly BrokerEvent[] {
  let newest: Map<string, string> | null = null
  for (const event of events) {
    if (event.key === undefined) continue
    newest ??= new Map()
    newest.set(`${event.topic.length}:${event.topic}${event.key}`, event.id)
  }
  if (newest === null) return events
  const map = newest
  return events.filter((e) => e.key === undefined || map.get(`${e.topic.length}:${e.topic}${e.key}`) === e.id)
}

/**
 * Whether a live event goes to a stream in a handoff. While the replay is
 * under way it is held instead, up to `maxBufferedBytes`; past that, all held
 * events are let go and so is every later one (a hung replay holds no memory).
 * Once live, events up to the id the handoff ended at are skipped; the first
 * later one ends the handoff.
 */
export function passes(entry: Entry, event: BrokerEvent, maxBufferedBytes: number): boolean {
  const handoff = entry.handoff as Replaying | Skipping
  if (handoff.kind === 'skipping') {
    if (compareIds(event.id, handoff.through) <= 0) return false
    entry.handoff = null
    return true
  }
  if (handoff.dropped === null) {
    handoff.held.push(event)
    handoff.bytes += event.frame.length
    if (handoff.bytes <= maxBufferedBytes) return false
    handoff.held = []
    handoff.bytes = 0
  }
  handoff.dropped = event.id
  return false
}

export class Resumes {
  readonly #broker: Broker
  readonly #log: FastifyBaseLogger
  readonly #counters: Counters
  readonly #options: ResumeOptions
  /** Hands over the events of the current turn, so the handoff sees them in order. */
  readonly #flushTurn: () => void

  constructor(
    broker: Broker,
    log: FastifyBaseLogger,
    counters: Counters,
    options: ResumeOptions,
    flushTurn: () => void
  ) {
    this.#broker = broker
    this.#log = log
    this.#counters = counters
    this.#options = options
    this.#flushTurn = flushTurn
  }

  /** Replays what `entry`'s stream missed of `topics` after `lastId`; it is subscribed already. */
  start(entry: Entry, topics: readonly string[], lastId: string): void {
    const replaying: Replaying = { kind: 'replaying', held: [], bytes: 0, dropped: null }
    entry.handoff = replaying
    const sink = entry.sink
    this.#broker.replay(topics, lastId).then(
      (replay) => {
        // Events delivered before now are held (or let go) first, as if handed over at once.
        this.#flushTurn()
        // The stream ended, or a gap reset it, while the replay was under way.
        if (entry.handoff !== replaying) return
        if (replay.found) {
          const events = supersede(replay.events)
          const all = replay.events.length
          this.#counters.resumed('replayed')
          // The replay's last event, kept or superseded, is where the stream goes live.
          this.#goLive(entry, events, all > 0 ? (replay.events[all - 1] as BrokerEvent).id : lastId)
          return
        }
        this.#counters.resumed('reset')
        sink.write(resetFrame(replay.head))
        this.#goLive(entry, [], replay.head)
      },
      (err: unknown) => {
        this.#flushTurn()
        if (entry.handoff !== replaying) return
        // Keep the client's position: it comes back with the same id, never a reset.
        this.#counters.resumed('unavailable')
        this.#log.warn(
          { err, lastEventId: lastId },
          'fastify-html-sse: the broker could not replay; the stream was ended so its client retries with the same id'
        )
        sink.endWithRetry(Math.floor(Math.random() * this.#options.resumeRetryMs), 'broker_unavailable')
      }
    )
  }

  /**
   * Ends the handoff of a stream whose replay (or reset) took it to `last`
   * (null: an empty log): the replay and the held live events after `last` go
   * out in one write, and later deliveries up to `last` will be skipped. If live
   * events after `last` were let go, the stream ends after the replay with a
   * hint instead, and its client resumes them from `last`.
   */
  #goLive(entry: Entry, replayed: readonly BrokerEvent[], last: string | null): void {
    const replaying = entry.handoff as Replaying
    const sink = entry.sink
    const overflow = last !== null && replaying.dropped !== null && compareIds(replaying.dropped, last) > 0
    const held = overflow ? [] : replaying.held.filter((event) => last === null || compareIds(event.id, last) > 0)
    const events = held.length === 0 ? replayed : [...replayed, ...held]
    if (events.length > 0) {
      // One write: the client takes it at its own pace.
      sink.write(joined(events))
      this.#counters.delivered(events.length)
    }
    if (overflow) {
      entry.handoff = null
      this.#log.info(
        { lastEventId: last },
        'fastify-html-sse: live events held during a replay passed maxBufferedBytes; the stream was ended so its client resumes after the replay'
      )
      sink.endWithRetry(Math.floor(Math.random() * this.#options.resumeRetryMs), 'resume_overflow')
      return
    }
    // None newer: the broker may not have delivered `last` yet (its reader lags the id the
    // client resumed from), and what it delivers up to `last` must not reach the stream.
    entry.handoff = held.length > 0 || last === null ? null : { kind: 'skipping', through: last }
  }
}
