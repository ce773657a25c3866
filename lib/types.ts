/**
 * The public types of a stream: what a route hands `reply.sse()` and what it
 * gets back, and why a stream ends.
 */
import type { Html, SseMessageOptions } from './frame.js'

/** What a source may yield: a frame, HTML, or the parts of a frame. */
export type SseItem = Html | { html: Html; event?: string; id?: string; retry?: number }

/** A source of items: a generator, an array, any (async) iterable. */
export type SseSource = AsyncIterable<SseItem> | Iterable<SseItem>

/**
 * A function that makes the source from the sink, e.g. a generator function that
 * needs `sink.signal` to cut its waits short when the client leaves.
 */
export type SseSourceFactory = (sink: SseSink) => SseSource

/** One open event stream, returned by `reply.sse()`. */
export interface SseSink {
  /**
   * Frames `html` and writes it. Resolves `true` once the frame is handed to the
   * socket (it waits while the socket is over its high-water mark), `false` when
   * the stream is closed, also if it closes while the send waits.
   */
  send(html: Html, event?: string, options?: SseMessageOptions): Promise<boolean>
  /** Writes a comment frame (ignored by clients). Same result as `send`. */
  comment(text?: string): Promise<boolean>
  /** Adds a topic: events published to it from now on reach this stream. */
  subscribe(topic: string): void
  /** Removes a topic. */
  unsubscribe(topic: string): void
  /** Ends the stream (the response ends normally). Idempotent. */
  close(): void
  /** Aborted when the stream ends, for any reason. */
  readonly signal: AbortSignal
  /** Resolves when the stream ends, for any reason. */
  readonly closed: Promise<void>
  /** The `Last-Event-ID` the request carried (header, or `lastEventId` query), or null. */
  readonly lastEventId: string | null
}

/** Why a stream ended, each a value of the `reason` attribute of `sse.streams.closed`. */
export const CLOSE_REASONS = [
  'client',
  'server',
  'error',
  'dropped',
  'write_timeout',
  'lifetime',
  'shutdown',
  'broker_unavailable',
  'resume_overflow',
  'revoked',
  'expired'
] as const

/** Why a stream ended; the `reason` attribute of `sse.streams.closed`. */
export type CloseReason = (typeof CLOSE_REASONS)[number]
