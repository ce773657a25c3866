/**
 * The one place that counts: each call updates `stats()` and records the
 * matching OpenTelemetry instrument together, so the two never disagree.
 */
import type { Metrics, RefuseReason, ResumeOutcome } from './metrics.js'
import type { CloseReason } from './types.js'

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

export class Counters {
  readonly #metrics: Metrics
  #published = 0
  #dropped = 0
  #refused = 0

  constructor(metrics: Metrics) {
    this.#metrics = metrics
  }

  opened(): void {
    this.#metrics.opened()
  }

  closed(reason: CloseReason): void {
    if (reason === 'dropped' || reason === 'write_timeout') this.#dropped++
    this.#metrics.closed(reason)
  }

  refused(reason: RefuseReason): void {
    this.#refused++
    this.#metrics.refused(reason)
  }

  published(): void {
    this.#published++
    this.#metrics.published()
  }

  /** Frames handed to sockets: once per published event (or replay), never per write. */
  delivered(count: number): void {
    this.#metrics.delivered(count)
  }

  resumed(outcome: ResumeOutcome): void {
    this.#metrics.resumed(outcome)
  }

  /** `stats()`, given what the hub holds. */
  stats(connections: number, topics: Record<string, number>): SseStats {
    return { connections, topics, published: this.#published, dropped: this.#dropped, refused: this.#refused }
  }
}
