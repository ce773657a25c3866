/**
 * Topics to local sinks: fan-out of pre-framed bytes, resume after
 * `Last-Event-ID`, heartbeats, the progress watch, admission counts and
 * `stats()`. It talks to the broker.
 */

import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Broker, BrokerEvent, Presence, PresenceShare } from './broker/types.js'
import { CONTROL_TOPIC, compareIds } from './broker/types.js'
import { FST_ERR_HTML_SSE_OPTION_INVALID, FST_ERR_HTML_SSE_TOPIC_INVALID } from './errors.js'
import { describe, sseMessage } from './frame.js'
import type { Metrics } from './metrics.js'
import {
  type CloseReason,
  type Pending,
  REVOKED_FRAME,
  type Sink,
  type SinkOwner,
  type Topics,
  type WatchLimits
} from './sink.js'

/** What `app.sse.stats()` returns. */
export interface SseStats {
  /** Open streams on this instance. */
  connections: number
  /** Subscribed streams per topic, on this instance; a topic with none is absent. A null-prototype object. */
  topics: Record<string, number>
  /** Events published through this instance. */
  published: number
  /** Streams closed because their client stopped reading (`maxBufferedBytes`) or stalled (`writeTimeoutMs`). */
  dropped: number
  /** Streams refused by `maxConnections` or `maxConnectionsPerClient`. */
  refused: number
}

/** What the hub needs to know of the plugin's options. */
export interface HubOptions {
  heartbeatMs: number
  maxBufferedBytes: number
  writeTimeoutMs: number
  /** The `retry:` hint after a failed resume is drawn from `[0, this)`. */
  resumeRetryMs: number
}

/** A UTF-16 surrogate without its pair: such a string has no UTF-8 form (Redis would store U+FFFD). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Throws `FST_ERR_HTML_SSE_OPTION_INVALID` unless `value` (option `name`) is a non-empty, well-formed string. */
export function checkName(name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID(
      name,
      `must be a non-empty string, got ${typeof value === 'string' ? 'an empty string' : describe(value)}`
    )
  }
  if (LONE_SURROGATE.test(value)) throw new FST_ERR_HTML_SSE_OPTION_INVALID(name, 'must not hold a lone surrogate')
}

/** Throws unless `topic` is a non-empty, well-formed string. */
export function checkTopic(topic: unknown): asserts topic is string {
  if (typeof topic !== 'string' || topic.length === 0) {
    throw new FST_ERR_HTML_SSE_TOPIC_INVALID(typeof topic === 'string' ? 'an empty string' : describe(topic))
  }
  if (LONE_SURROGATE.test(topic)) throw new FST_ERR_HTML_SSE_TOPIC_INVALID('a string with a lone surrogate')
}

/** Which streams `app.sse.disconnect()` ends: those matching every field given. */
export interface DisconnectFilter {
  member?: string | undefined
  topic?: string | undefined
}

/** Presence changes are shared this long after the first, together. */
const PRESENCE_FLUSH_MS = 200
/** Every topic with local streams is shared again this often... */
const PRESENCE_REFRESH_MS = 4000
/** ...and a share lives this long: an instance that died leaves presence within it. */
const PRESENCE_TTL_MS = 12_000

/** A turn's events go out at once past this many bytes, without waiting for its end. */
const TURN_BYTES = 64 * 1024

/** How often sinks with unsent bytes are checked for progress, at most. */
const WATCH_MS = 250
/**
 * Over `maxBufferedBytes`, a client that accepts no byte for this long stopped
 * reading. A kernel takes a slow reader's bytes in steps (on loopback about
 * 1.4 MB at a time), so this must outlast a step at the slowest rate served.
 */
const STALL_MS = 3000
/** The trend window: a backlog over `maxBufferedBytes` whose low point rises two windows in a row cannot catch up. */
const WINDOW_MS = 2000

export class Hub implements SinkOwner {
  readonly sinks = new Set<Sink>()
  readonly #topics = new Map<string, Set<Sink>>()
  /** Open streams per client key, when `maxConnectionsPerClient` is set. */
  readonly #clients = new Map<string, number>()
  /** Per topic, its streams' members and how many streams each has. */
  readonly #members = new Map<string, Map<string, number>>()
  /** Topics whose presence changed since the last share. */
  readonly #dirty = new Set<string>()
  /** This instance, among those sharing the broker's presence. */
  readonly #instance = randomUUID()
  #presenceFlush: NodeJS.Timeout | null = null
  #presenceRefresh: NodeJS.Timeout | null = null
  /** Sinks with unsent bytes. */
  readonly #watched = new Set<Sink>()
  readonly #broker: Broker
  readonly #log: FastifyBaseLogger
  readonly #metrics: Metrics
  readonly #options: HubOptions
  readonly #watchMs: number
  readonly #limits: WatchLimits
  /** Events delivered this turn, not yet handed to streams. */
  #turn: BrokerEvent[] = []
  #turnBytes = 0
  #heartbeat: NodeJS.Timeout | null = null
  #watchTimer: NodeJS.Timeout | null = null
  published = 0
  dropped = 0
  refused = 0
  /** `app.close()` has begun: new streams are ended at once. */
  closing = false
  /** A write found a socket over its high-water mark since the flag was last cleared. */
  pressure = false

  constructor(broker: Broker, log: FastifyBaseLogger, metrics: Metrics, options: HubOptions) {
    this.#broker = broker
    this.#log = log
    this.#metrics = metrics
    this.#options = options
    this.#watchMs =
      options.writeTimeoutMs > 0 ? Math.max(5, Math.min(WATCH_MS, Math.floor(options.writeTimeoutMs / 4))) : WATCH_MS
    this.#limits = {
      maxBufferedBytes: options.maxBufferedBytes,
      writeTimeoutMs: options.writeTimeoutMs,
      stallMs: options.writeTimeoutMs > 0 ? Math.min(STALL_MS, options.writeTimeoutMs) : STALL_MS,
      windowMs: WINDOW_MS
    }
    if (options.heartbeatMs > 0) {
      this.#heartbeat = setInterval(() => {
        for (const sink of this.sinks) sink.heartbeat()
      }, options.heartbeatMs)
      this.#heartbeat.unref()
    }
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
    const turn = this.#turn
    turn.push(event)
    this.#turnBytes += event.frame.length
    if (turn.length === 1) process.nextTick(this.#endTurn)
    return this.#turnBytes < TURN_BYTES || this.flushTurn()
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
    let oneByOne: Set<Sink> | null = null
    for (const [topic, list] of byTopic(events)) {
      const subscribers = this.#topics.get(topic)
      if (subscribers === undefined) continue
      const frame = list.length === 1 ? (list[0] as BrokerEvent).frame : Buffer.concat(list.map(frameOf))
      for (const sink of subscribers) {
        if (sink.handoff !== null || typeof sink.topics !== 'string') {
          oneByOne ??= new Set()
          oneByOne.add(sink)
          continue
        }
        delivered += list.length
        if (!sink.write(frame)) flowing = false
      }
    }
    if (oneByOne !== null) {
      for (const sink of oneByOne) {
        for (const event of events) {
          if (!subscribedTo(sink.topics, event.topic)) continue
          if (sink.handoff !== null && !this.#passes(sink, event)) continue
          delivered++
          if (!sink.write(event.frame)) flowing = false
        }
      }
    }
    this.#metrics.delivered(delivered)
    if (!flowing) this.pressure = true
    return flowing
  }

  /** The broker's gap listener: events were skipped, so every stream with topics starts over from `head`. */
  readonly gap = (head: string | null): void => {
    this.flushTurn()
    this.#log.warn({ head }, 'fastify-html-sse: the broker skipped events; streams with topics get a reset')
    const frame = resetFrame(head)
    for (const sink of this.sinks) {
      if (sink.topics === null) continue
      // A replay under way is dropped: its result no longer matches the handoff.
      sink.handoff = null
      sink.write(frame)
    }
  }

  /** Open streams of `key` (for `maxConnectionsPerClient`). */
  clientCount(key: string): number {
    return this.#clients.get(key) ?? 0
  }

  add(sink: Sink): void {
    this.sinks.add(sink)
    if (sink.clientKey !== null) this.#clients.set(sink.clientKey, this.clientCount(sink.clientKey) + 1)
    this.#metrics.opened()
  }

  subscribe(sink: Sink, topic: string): void {
    checkTopic(topic)
    const topics = sink.topics
    if (topics === null) sink.topics = topic
    else if (typeof topics === 'string') {
      if (topics === topic) return
      sink.topics = new Set([topics, topic])
    } else if (topics.has(topic)) return
    else topics.add(topic)
    let subscribers = this.#topics.get(topic)
    if (subscribers === undefined) {
      subscribers = new Set()
      this.#topics.set(topic, subscribers)
    }
    subscribers.add(sink)
    if (sink.member !== null) {
      let members = this.#members.get(topic)
      if (members === undefined) {
        members = new Map()
        this.#members.set(topic, members)
      }
      members.set(sink.member, (members.get(sink.member) ?? 0) + 1)
    }
    this.#changed(topic)
  }

  unsubscribe(sink: Sink, topic: string): void {
    const topics = sink.topics
    if (topics === topic) sink.topics = null
    else if (topics === null || typeof topics === 'string' || !topics.delete(topic)) return
    else if (topics.size === 0) sink.topics = null
    this.#leave(sink, topic)
  }

  remove(sink: Sink, reason: CloseReason): void {
    if (!this.sinks.delete(sink)) return
    const topics: Topics = sink.topics
    if (typeof topics === 'string') this.#leave(sink, topics)
    else if (topics !== null) for (const topic of topics) this.#leave(sink, topic)
    sink.topics = null
    sink.handoff = null
    if (sink.clientKey !== null) {
      const left = this.clientCount(sink.clientKey) - 1
      if (left > 0) this.#clients.set(sink.clientKey, left)
      else this.#clients.delete(sink.clientKey)
    }
    if (reason === 'dropped' || reason === 'write_timeout') this.dropped++
    this.#metrics.closed(reason)
  }

  watch(sink: Sink): void {
    this.#watched.add(sink)
    if (this.#watchTimer !== null) return
    this.#watchTimer = setInterval(this.#check, this.#watchMs)
    this.#watchTimer.unref()
  }

  readonly #check = (): void => {
    const now = Date.now()
    for (const sink of this.#watched) {
      if (!sink.check(now, this.#limits)) this.#watched.delete(sink)
    }
    if (this.#watched.size === 0 && this.#watchTimer !== null) {
      clearInterval(this.#watchTimer)
      this.#watchTimer = null
    }
  }

  /**
   * Subscribes `sink` to `topics` and, when it carries a `Last-Event-ID`, sends
   * what it missed first. Live events that arrive meanwhile wait in
   * `sink.handoff` (bounded by `maxBufferedBytes`); those the replay already
   * held are skipped by id.
   */
  open(sink: Sink, topics: readonly string[]): void {
    for (const topic of topics) checkTopic(topic)
    const lastId = sink.lastEventId
    if (lastId === null || topics.length === 0) {
      for (const topic of topics) this.subscribe(sink, topic)
      return
    }
    const pending: Pending = { events: [], bytes: 0, dropped: null }
    sink.handoff = pending
    for (const topic of topics) this.subscribe(sink, topic)
    this.#broker.replay(topics, lastId).then(
      (replay) => {
        // Events delivered before now are held (or let go) first, as if handed over at once.
        this.flushTurn()
        // The stream ended, or a gap reset it, while the replay was under way.
        if (sink.handoff !== pending) return
        let last: string
        if (replay.found) {
          const events = supersede(replay.events)
          const n = events.length
          if (n > 0) {
            // One write for the whole replay: the client takes it at its own pace.
            sink.write(n === 1 ? (events[0] as BrokerEvent).frame : Buffer.concat(events.map(frameOf)))
            this.#metrics.delivered(n)
          }
          // The replay's last event, kept or superseded, is where the stream goes live.
          const all = replay.events.length
          last = all > 0 ? (replay.events[all - 1] as BrokerEvent).id : lastId
          this.#metrics.resumed('replayed')
        } else {
          this.#metrics.resumed('reset')
          if (replay.head === null) {
            // An empty log: nothing to resume from and nothing missed.
            sink.write(resetFrame(null))
            this.#goLive(sink, null)
            return
          }
          last = replay.head
          sink.write(resetFrame(replay.head))
        }
        this.#goLive(sink, last)
      },
      (err: unknown) => {
        this.flushTurn()
        if (sink.handoff !== pending) return
        // Keep the client's position: it comes back with the same id, never a reset.
        this.#metrics.resumed('unavailable')
        this.#log.warn(
          { err, lastEventId: lastId },
          'fastify-html-sse: the broker could not replay; the stream was ended so its client retries with the same id'
        )
        sink.endWithRetry(Math.floor(Math.random() * this.#options.resumeRetryMs), 'broker_unavailable')
      }
    )
  }

  /**
   * Whether a live event goes to a stream in its resume handoff. While the
   * replay is under way it is held instead, up to `maxBufferedBytes`; past that,
   * all held events are let go and so is every later one (a hung replay holds no
   * memory): the replay, or the client's resume after it, brings them back. Once
   * live, events up to the id the handoff ended at are skipped (the broker had
   * not delivered them yet); the first later one ends the handoff.
   */
  #passes(sink: Sink, event: BrokerEvent): boolean {
    const handoff = sink.handoff as Pending | string
    if (typeof handoff === 'string') {
      if (compareIds(event.id, handoff) <= 0) return false
      sink.handoff = null
      return true
    }
    if (handoff.dropped === null) {
      handoff.events.push(event)
      handoff.bytes += event.frame.length
      if (handoff.bytes <= this.#options.maxBufferedBytes) return false
      handoff.events = []
      handoff.bytes = 0
    }
    handoff.dropped = event.id
    return false
  }

  #leave(sink: Sink, topic: string): void {
    const subscribers = this.#topics.get(topic) as Set<Sink>
    subscribers.delete(sink)
    if (subscribers.size === 0) this.#topics.delete(topic)
    if (sink.member !== null) {
      const members = this.#members.get(topic) as Map<string, number>
      const left = (members.get(sink.member) as number) - 1
      if (left > 0) members.set(sink.member, left)
      else {
        members.delete(sink.member)
        if (members.size === 0) this.#members.delete(topic)
      }
    }
    this.#changed(topic)
  }

  /** This instance's share of `topic`, or null when it holds no stream of it. */
  #share(topic: string): PresenceShare | null {
    const subscribers = this.#topics.get(topic)
    if (subscribers === undefined) return null
    const members = this.#members.get(topic)
    return { streams: subscribers.size, members: members === undefined ? [] : [...members.keys()].sort() }
  }

  /** Presence of `topic` changed: share it soon, with whatever else changes meanwhile. */
  #changed(topic: string): void {
    if (this.#broker.sharePresence === undefined || this.closing) return
    this.#dirty.add(topic)
    if (this.#presenceFlush !== null) return
    this.#presenceFlush = setTimeout(this.#flushPresence, PRESENCE_FLUSH_MS)
    this.#presenceFlush.unref()
    if (this.#presenceRefresh === null) {
      this.#presenceRefresh = setInterval(this.#refreshPresence, PRESENCE_REFRESH_MS)
      this.#presenceRefresh.unref()
    }
  }

  /** Shares the topics that changed. */
  readonly #flushPresence = (): void => {
    this.#presenceFlush = null
    const shares = new Map<string, PresenceShare | null>()
    for (const topic of this.#dirty) shares.set(topic, this.#share(topic))
    this.#dirty.clear()
    this.#sharePresence(shares)
  }

  /** Shares every topic this instance holds again, so its shares outlive their TTL while it lives. */
  readonly #refreshPresence = (): void => {
    if (this.#topics.size === 0) return
    const shares = new Map<string, PresenceShare | null>()
    for (const topic of this.#topics.keys()) shares.set(topic, this.#share(topic))
    this.#sharePresence(shares)
  }

  #sharePresence(shares: Map<string, PresenceShare | null>): Promise<void> {
    const share = this.#broker.sharePresence
    if (share === undefined || shares.size === 0) return Promise.resolve()
    return share.call(this.#broker, this.#instance, shares, PRESENCE_TTL_MS).catch((err: unknown) => {
      // Shared again at the next change or refresh; until then presence lags.
      for (const topic of shares.keys()) this.#dirty.add(topic)
      this.#log.warn({ err }, 'fastify-html-sse: presence could not be shared; it is tried again')
    })
  }

  /** `topic`'s presence across every instance (this one only, with a broker that shares none). */
  async presence(topic: string): Promise<Presence> {
    checkTopic(topic)
    if (this.#broker.presence === undefined || this.#broker.sharePresence === undefined) {
      const share = this.#share(topic)
      return { streams: share?.streams ?? 0, members: share === null ? [] : [...share.members] }
    }
    return this.#broker.presence(topic)
  }

  /** Ends the matching local streams after a `revoked` event. */
  revoke(filter: DisconnectFilter): void {
    const { member, topic } = filter
    const candidates = topic === undefined ? this.sinks : this.#topics.get(topic)
    if (candidates === undefined) return
    for (const sink of [...candidates]) {
      if (member !== undefined && sink.member !== member) continue
      if (topic !== undefined && !subscribedTo(sink.topics, topic)) continue
      sink.endWith(REVOKED_FRAME, 'revoked')
    }
  }

  /** A control entry from the broker: a message for every instance. */
  #control(event: BrokerEvent): void {
    const message = readControl(event.frame)
    if (message === null) {
      this.#log.warn({ id: event.id }, 'fastify-html-sse: a control entry could not be read; it was ignored')
      return
    }
    if (message.type === 'disconnect') this.revoke(message.filter)
  }

  /**
   * Ends the handoff of a stream whose replay (or reset) took it to `last`: the
   * held live events after `last` go out, and later ones up to `last` will be
   * skipped. If live events after `last` were let go, the stream ends with a
   * hint instead, and its client resumes them from `last`.
   */
  #goLive(sink: Sink, last: string | null): void {
    const pending = sink.handoff as Pending
    if (last !== null && pending.dropped !== null && compareIds(pending.dropped, last) > 0) {
      sink.handoff = null
      this.#log.info(
        { lastEventId: last },
        'fastify-html-sse: live events held during a replay passed maxBufferedBytes; the stream was ended so its client resumes after the replay'
      )
      sink.endWithRetry(Math.floor(Math.random() * this.#options.resumeRetryMs), 'resume_overflow')
      return
    }
    let newer = last === null
    let written = 0
    for (const event of pending.events) {
      if (newer || compareIds(event.id, last as string) > 0) {
        newer = true
        written++
        sink.write(event.frame)
      }
    }
    this.#metrics.delivered(written)
    // Not newer: the broker may not have delivered `last` yet (its reader lags the id the
    // client resumed from), and what it delivers up to `last` must not reach the stream.
    sink.handoff = newer ? null : last
  }

  /** At shutdown: stops sharing and takes back this instance's shares (best effort, not awaited). */
  #withdrawPresence(): void {
    if (this.#presenceFlush !== null) clearTimeout(this.#presenceFlush)
    if (this.#presenceRefresh !== null) clearInterval(this.#presenceRefresh)
    this.#presenceFlush = null
    this.#presenceRefresh = null
    const shares = new Map<string, PresenceShare | null>()
    for (const topic of new Set([...this.#topics.keys(), ...this.#dirty])) shares.set(topic, null)
    this.#dirty.clear()
    this.withdrawn = this.#sharePresence(shares)
  }

  /** Settles once this instance's shares are taken back at shutdown (the broker is closed after it). */
  withdrawn: Promise<void> = Promise.resolve()

  stats(): SseStats {
    const topics: Record<string, number> = Object.create(null)
    for (const [topic, subscribers] of this.#topics) topics[topic] = subscribers.size
    return {
      connections: this.sinks.size,
      topics,
      published: this.published,
      dropped: this.dropped,
      refused: this.refused
    }
  }

  /**
   * Ends every stream after a `retry:` hint drawn from `[0, drainMs]`, so their
   * browsers reconnect spread over that window. A client that is not reading is
   * dropped, so `app.close()` never waits on it.
   */
  close(drainMs: number): void {
    this.flushTurn()
    if (!this.closing) this.#withdrawPresence()
    this.closing = true
    if (this.#heartbeat !== null) clearInterval(this.#heartbeat)
    if (this.#watchTimer !== null) clearInterval(this.#watchTimer)
    this.#heartbeat = null
    this.#watchTimer = null
    for (const sink of this.sinks) sink.endWithRetry(Math.floor(Math.random() * (drainMs + 1)), 'shutdown')
  }
}

function frameOf(event: BrokerEvent): Buffer {
  return event.frame
}

/** A turn's events by topic, each list in order; most turns have one topic. */
function byTopic(events: readonly BrokerEvent[]): Iterable<[string, BrokerEvent[]]> {
  const first = (events[0] as BrokerEvent).topic
  let mixed = false
  for (const event of events) {
    if (event.topic !== first) {
      mixed = true
      break
    }
  }
  if (!mixed) return [[first, events as BrokerEvent[]]]
  const topics = new Map<string, BrokerEvent[]>()
  for (const event of events) {
    const list = topics.get(event.topic)
    if (list === undefined) topics.set(event.topic, [event])
    else list.push(event)
  }
  return topics
}

/** Whether a sink's topics include `topic`. */
function subscribedTo(topics: Topics, topic: string): boolean {
  return topics === topic || (topics !== null && typeof topics !== 'string' && topics.has(topic))
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

/** A message between instances, carried by a control entry. */
export type ControlMessage = { type: 'disconnect'; filter: DisconnectFilter }

/** The body of a control entry: a frame whose one data line is the message as JSON. */
export function controlBody(message: ControlMessage): string {
  return `event: control\ndata: ${JSON.stringify(message)}\n\n`
}

/** The message of a control entry's frame, or null when it is not one. */
function readControl(frame: Buffer): ControlMessage | null {
  const text = frame.toString()
  const at = text.indexOf('\ndata: ')
  if (at === -1) return null
  try {
    const message = JSON.parse(text.slice(at + 7, text.indexOf('\n', at + 7))) as ControlMessage
    return message?.type === 'disconnect' && typeof message.filter === 'object' && message.filter !== null
      ? message
      : null
  } catch {
    return null
  }
}

/**
 * The `reset` event sent when a `Last-Event-ID` cannot be resumed. Its id is the
 * newest id (or empty, which clears the browser's), so the next reconnect
 * resumes from here instead of resetting again.
 */
function resetFrame(head: string | null): string {
  return sseMessage('', 'reset', { id: head ?? '' })
}
