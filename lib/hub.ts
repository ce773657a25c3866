/**
 * Topics to local sinks: fan-out of pre-framed bytes, resume after
 * `Last-Event-ID`, heartbeats and `stats()`. It talks to the broker.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Broker, BrokerEvent } from './broker/types.js'
import { compareIds } from './broker/types.js'
import { FST_ERR_HTML_SSE_TOPIC_INVALID } from './errors.js'
import { describe, sseMessage } from './frame.js'
import type { Sink, SinkOwner } from './sink.js'

/** What `app.sse.stats()` returns. */
export interface SseStats {
  /** Open streams on this instance. */
  connections: number
  /** Subscribed streams per topic, on this instance; a topic with none is absent. */
  topics: Record<string, number>
  /** Events published through this instance. */
  published: number
  /** Streams closed because they fell more than `maxBufferedBytes` behind. */
  dropped: number
}

/** Throws unless `topic` is a non-empty string. */
export function checkTopic(topic: unknown): asserts topic is string {
  if (typeof topic !== 'string' || topic.length === 0) {
    throw new FST_ERR_HTML_SSE_TOPIC_INVALID(typeof topic === 'string' ? 'an empty string' : describe(topic))
  }
}

export class Hub implements SinkOwner {
  readonly sinks = new Set<Sink>()
  readonly #topics = new Map<string, Set<Sink>>()
  readonly #broker: Broker
  readonly #log: FastifyBaseLogger
  #timer: NodeJS.Timeout | null = null
  published = 0
  dropped = 0
  /** A write found a socket over its high-water mark since the flag was last cleared. */
  pressure = false

  constructor(broker: Broker, log: FastifyBaseLogger, heartbeatMs: number) {
    this.#broker = broker
    this.#log = log
    if (heartbeatMs > 0) {
      this.#timer = setInterval(() => {
        for (const sink of this.sinks) sink.heartbeat()
      }, heartbeatMs)
      this.#timer.unref()
    }
  }

  /** The broker's listener: hands one event's bytes to every local subscriber of its topic. */
  readonly deliver = (event: BrokerEvent): boolean => {
    const subscribers = this.#topics.get(event.topic)
    if (subscribers === undefined) return true
    const frame = event.frame
    let flowing = true
    for (const sink of subscribers) {
      if (sink.pending !== null) sink.pending.push(event)
      else if (!sink.write(frame)) flowing = false
    }
    if (!flowing) this.pressure = true
    return flowing
  }

  add(sink: Sink): void {
    this.sinks.add(sink)
  }

  subscribe(sink: Sink, topic: string): void {
    checkTopic(topic)
    if (sink.topics.includes(topic)) return
    sink.topics.push(topic)
    let subscribers = this.#topics.get(topic)
    if (subscribers === undefined) {
      subscribers = new Set()
      this.#topics.set(topic, subscribers)
    }
    subscribers.add(sink)
  }

  unsubscribe(sink: Sink, topic: string): void {
    const at = sink.topics.indexOf(topic)
    if (at === -1) return
    sink.topics.splice(at, 1)
    const subscribers = this.#topics.get(topic) as Set<Sink>
    subscribers.delete(sink)
    if (subscribers.size === 0) this.#topics.delete(topic)
  }

  remove(sink: Sink, dropped: boolean): void {
    if (!this.sinks.delete(sink)) return
    for (let i = sink.topics.length - 1; i >= 0; i--) this.unsubscribe(sink, sink.topics[i] as string)
    sink.pending = null
    if (dropped) this.dropped++
  }

  /**
   * Subscribes `sink` to `topics` and, when it carries a `Last-Event-ID`, sends
   * what it missed first. Live events that arrive meanwhile wait in
   * `sink.pending`; those the replay already held are skipped by id.
   */
  open(sink: Sink, topics: readonly string[]): void {
    for (const topic of topics) checkTopic(topic)
    const lastId = sink.lastEventId
    if (lastId !== null && topics.length > 0) sink.pending = []
    for (const topic of topics) this.subscribe(sink, topic)
    if (sink.pending === null) return
    this.#broker.replay(topics, lastId as string).then(
      (replay) => {
        let last: string | null
        if (replay.found) {
          for (const event of replay.events) sink.write(event.frame)
          last = replay.events.length > 0 ? (replay.events.at(-1) as BrokerEvent).id : (lastId as string)
        } else {
          last = replay.head
          sink.write(resetFrame(replay.head))
        }
        this.#goLive(sink, last)
      },
      (err: unknown) => {
        this.#log.warn({ err }, 'fastify-html-sse: replay failed; the stream starts with a reset')
        sink.write(resetFrame(null))
        this.#goLive(sink, null)
      }
    )
  }

  #goLive(sink: Sink, last: string | null): void {
    const pending = sink.pending
    sink.pending = null
    if (pending === null) return
    for (const event of pending) {
      if (last === null || compareIds(event.id, last) > 0) sink.write(event.frame)
    }
  }

  stats(): SseStats {
    const topics: Record<string, number> = {}
    for (const [topic, subscribers] of this.#topics) topics[topic] = subscribers.size
    return { connections: this.sinks.size, topics, published: this.published, dropped: this.dropped }
  }

  /** Ends every stream: gracefully, or by dropping the connection of a client that stopped reading. */
  close(): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    for (const sink of this.sinks) sink.shutdown()
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
