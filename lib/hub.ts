/**
 * Topics to local streams: the broker's listener, fan-out of pre-framed bytes
 * one turn at a time, subscriptions, heartbeats, revocation and shutdown. It
 * keeps its own record of each stream (`Entry`: topics, resume handoff); the
 * resume (`resume.ts`), presence (`presence.ts`) and the progress watch
 * (`watch.ts`) each live in a file of their own.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Broker, BrokerEvent, Presence } from './broker/types.js'
import { CONTROL_TOPIC } from './broker/types.js'
import { type DisconnectFilter, readControl } from './control.js'
import type { Counters, SseStats } from './counters.js'
import { REVOKED_FRAME, resetFrame } from './frame.js'
import { PresenceBook } from './presence.js'
import { type Entry, joined, passes, Resumes } from './resume.js'
import type { Sink, SinkOwner } from './sink.js'
import type { CloseReason } from './types.js'
import { checkTopic } from './validate.js'
import { Watcher, watchLimits } from './watch.js'

/** What the hub needs to know of the plugin's options. */
export interface HubOptions {
  heartbeatMs: number
  maxBufferedBytes: number
  writeTimeoutMs: number
  /** The `retry:` hint after a failed resume is drawn from `[0, this)`. */
  resumeRetryMs: number
}

/** A turn's events go out at once past this many bytes, without waiting for its end. */
const TURN_BYTES = 64 * 1024

export class Hub implements SinkOwner {
  readonly #entries = new Map<Sink, Entry>()
  readonly #topics = new Map<string, Set<Entry>>()
  /** Open streams per client key, when `maxConnectionsPerClient` is set. */
  readonly #clients = new Map<string, number>()
  readonly #log: FastifyBaseLogger
  readonly #counters: Counters
  readonly #maxBufferedBytes: number
  readonly #watcher: Watcher
  readonly #presence: PresenceBook
  readonly #resumes: Resumes
  /** Events delivered this turn, not yet handed to streams. */
  #turn: BrokerEvent[] = []
  #turnBytes = 0
  #heartbeat: NodeJS.Timeout | null = null
  #closing = false
  /** A write found a socket over its high-water mark since `takePressure()` last looked. */
  #pressure = false

  constructor(broker: Broker, log: FastifyBaseLogger, counters: Counters, options: HubOptions) {
    this.#log = log
    this.#counters = counters
    this.#maxBufferedBytes = options.maxBufferedBytes
    this.#watcher = new Watcher(watchLimits(options.maxBufferedBytes, options.writeTimeoutMs))
    this.#presence = new PresenceBook(broker, log)
    this.#resumes = new Resumes(broker, log, counters, options, () => this.flushTurn())
    if (options.heartbeatMs > 0) {
      this.#heartbeat = setInterval(() => {
        for (const sink of this.#entries.keys()) sink.heartbeat()
      }, options.heartbeatMs)
      this.#heartbeat.unref()
    }
  }

  /** Open streams on this instance. */
  get size(): number {
    return this.#entries.size
  }

  /** `app.close()` has begun: new streams are ended at once. */
  get closing(): boolean {
    return this.#closing
  }

  /** Whether a socket was over its high-water mark since the last call (a burst then yields to I/O). */
  takePressure(): boolean {
    const pressure = this.#pressure
    this.#pressure = false
    return pressure
  }

  /**
   * The broker's listener. Events of one turn (publishes in a row, a broker's
   * batch) are gathered and handed over together at the end of the turn
   * (`process.nextTick`), or sooner past `TURN_BYTES`: each topic's frames are
   * joined once, and each stream on one topic gets one write per turn.
   */
  readonly deliver = (event: BrokerEvent): boolean => {
    if (!this.#topics.has(event.topic)) {
      if (event.topic === CONTROL_TOPIC) {
        // Events before it go out first; a stream it ends gets nothing after.
        this.flushTurn()
        this.#control(event)
      }
      return true
    }
    const bytes = event.frame.length
    // A turn's joined frames stay within one write's slice (SLICE_BYTES): hand over what came first.
    const flowing = this.#turnBytes + bytes > TURN_BYTES ? this.flushTurn() : true
    this.#turn.push(event)
    this.#turnBytes += bytes
    if (this.#turn.length === 1) process.nextTick(this.#endTurn)
    return flowing
  }

  readonly #endTurn = (): void => {
    this.flushTurn()
  }

  /**
   * Hands the turn's events to their streams, in order. Returns false when a
   * socket is over its high-water mark (a broker's batch then yields to I/O).
   */
  flushTurn(): boolean {
    const events = this.#turn
    if (events.length === 0) return true
    this.#turn = []
    this.#turnBytes = 0
    let flowing = true
    let delivered = 0
    /** Streams on several topics, or in a resume handoff: they take the events one by one. */
    let oneByOne: Set<Entry> | null = null
    for (const [topic, list] of byTopic(events)) {
      const subscribers = this.#topics.get(topic)
      if (subscribers === undefined) continue
      const frame = joined(list)
      for (const entry of subscribers) {
        if (entry.handoff !== null || typeof entry.topics !== 'string') {
          oneByOne ??= new Set()
          oneByOne.add(entry)
          continue
        }
        delivered += list.length
        if (!entry.sink.write(frame)) flowing = false
      }
    }
    if (oneByOne !== null) {
      for (const entry of oneByOne) {
        for (const event of events) {
          if (!subscribedTo(entry, event.topic)) continue
          if (entry.handoff !== null && !passes(entry, event, this.#maxBufferedBytes)) continue
          delivered++
          if (!entry.sink.write(event.frame)) flowing = false
        }
      }
    }
    this.#counters.delivered(delivered)
    if (!flowing) this.#pressure = true
    return flowing
  }

  /** The broker's gap listener: events were skipped, so every stream with topics starts over from `head`. */
  readonly gap = (head: string | null): void => {
    this.flushTurn()
    this.#log.warn({ head }, 'fastify-html-sse: the broker skipped events; streams with topics get a reset')
    const frame = resetFrame(head)
    for (const entry of this.#entries.values()) {
      if (entry.topics === null) continue
      // A replay under way is dropped: its result no longer matches the handoff.
      entry.handoff = null
      entry.sink.write(frame)
    }
  }

  /** Open streams of `key` (for `maxConnectionsPerClient`). */
  clientCount(key: string): number {
    return this.#clients.get(key) ?? 0
  }

  /**
   * Takes `sink` in: subscribes it to `topics` and, when it carries a
   * `Last-Event-ID`, sends what it missed first (see `resume.ts`).
   */
  add(sink: Sink, topics: readonly string[]): void {
    this.flushTurn()
    const entry: Entry = { sink, topics: null, handoff: null }
    this.#entries.set(sink, entry)
    const key = sink.clientKey
    if (key !== null) this.#clients.set(key, this.clientCount(key) + 1)
    this.#counters.opened()
    for (const topic of topics) this.#join(entry, topic)
    const lastId = sink.lastEventId
    if (lastId !== null && topics.length > 0) this.#resumes.start(entry, topics, lastId)
  }

  subscribe(sink: Sink, topic: string): void {
    checkTopic(topic)
    // What this turn published before the stream subscribed is not for it.
    this.flushTurn()
    const entry = this.#entries.get(sink)
    if (entry !== undefined) this.#join(entry, topic)
  }

  unsubscribe(sink: Sink, topic: string): void {
    const entry = this.#entries.get(sink)
    if (entry === undefined) return
    // What this turn published while the stream was subscribed is still for it.
    this.flushTurn()
    const topics = entry.topics
    if (topics === topic) entry.topics = null
    else if (topics === null || typeof topics === 'string' || !topics.delete(topic)) return
    else if (topics.size === 0) entry.topics = null
    this.#leave(entry, topic)
  }

  hasTopics(sink: Sink): boolean {
    return (this.#entries.get(sink)?.topics ?? null) !== null
  }

  remove(sink: Sink, reason: CloseReason): void {
    const entry = this.#entries.get(sink)
    if (entry === undefined) return
    this.#entries.delete(sink)
    const topics = entry.topics
    if (typeof topics === 'string') this.#leave(entry, topics)
    else if (topics !== null) for (const topic of topics) this.#leave(entry, topic)
    entry.topics = null
    entry.handoff = null
    const key = sink.clientKey
    if (key !== null) {
      const left = this.clientCount(key) - 1
      if (left > 0) this.#clients.set(key, left)
      else this.#clients.delete(key)
    }
    this.#counters.closed(reason)
  }

  watch(sink: Sink): void {
    this.#watcher.add(sink)
  }

  /** `topic`'s presence across every instance sharing the broker. */
  async presence(topic: string): Promise<Presence> {
    checkTopic(topic)
    return this.#presence.presence(topic)
  }

  /** Ends the matching local streams after a `revoked` event. */
  revoke({ member, topic }: DisconnectFilter): void {
    const candidates = topic === undefined ? this.#entries.values() : this.#topics.get(topic)
    if (candidates === undefined) return
    for (const entry of [...candidates]) {
      if (member !== undefined && entry.sink.member !== member) continue
      entry.sink.endWith(REVOKED_FRAME, 'revoked')
    }
  }

  stats(): SseStats {
    const topics: Record<string, number> = Object.create(null)
    for (const [topic, subscribers] of this.#topics) topics[topic] = subscribers.size
    return this.#counters.stats(this.#entries.size, topics)
  }

  /**
   * Ends every stream after a `retry:` hint drawn from `[0, drainMs]`, so their
   * browsers reconnect spread over that window, and takes this instance's
   * presence back (the returned promise). A client that is not reading is
   * dropped, so `app.close()` never waits on it.
   */
  close(drainMs: number): Promise<void> {
    this.flushTurn()
    const withdrawn = this.#presence.stop()
    this.#closing = true
    if (this.#heartbeat !== null) clearInterval(this.#heartbeat)
    this.#heartbeat = null
    this.#watcher.stop()
    for (const sink of [...this.#entries.keys()]) {
      sink.endWithRetry(Math.floor(Math.random() * (drainMs + 1)), 'shutdown')
    }
    return withdrawn
  }

  #join(entry: Entry, topic: string): void {
    const topics = entry.topics
    if (topics === null) entry.topics = topic
    else if (typeof topics === 'string') {
      if (topics === topic) return
      entry.topics = new Set([topics, topic])
    } else if (topics.has(topic)) return
    else topics.add(topic)
    let subscribers = this.#topics.get(topic)
    if (subscribers === undefined) {
      subscribers = new Set()
      this.#topics.set(topic, subscribers)
    }
    subscribers.add(entry)
    this.#presence.joined(topic, entry.sink.member)
  }

  #leave(entry: Entry, topic: string): void {
    const subscribers = this.#topics.get(topic) as Set<Entry>
    subscribers.delete(entry)
    if (subscribers.size === 0) this.#topics.delete(topic)
    this.#presence.left(topic, entry.sink.member)
  }

  /** A control entry from the broker: a message for every instance. */
  #control(event: BrokerEvent): void {
    const message = readControl(event.frame)
    if (message === null) {
      this.#log.warn({ id: event.id }, 'fastify-html-sse: a control entry could not be read; it was ignored')
      return
    }
    this.revoke(message.filter)
  }
}

/** Whether an entry's topics include `topic`. */
function subscribedTo(entry: Entry, topic: string): boolean {
  const topics = entry.topics
  return topics === topic || (topics !== null && typeof topics !== 'string' && topics.has(topic))
}

/** A turn's events by topic, each list in order; most turns have one topic. */
function byTopic(events: readonly BrokerEvent[]): Iterable<[string, BrokerEvent[]]> {
  const first = (events[0] as BrokerEvent).topic
  if (events.every((event) => event.topic === first)) return [[first, events as BrokerEvent[]]]
  const topics = new Map<string, BrokerEvent[]>()
  for (const event of events) {
    const list = topics.get(event.topic)
    if (list === undefined) topics.set(event.topic, [event])
    else list.push(event)
  }
  return topics
}
