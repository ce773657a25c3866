/**
 * The source pump: reads what a route handed `reply.sse()` (an iterable, an
 * async iterable, or a function of the sink making one) and sends each item,
 * waiting while the socket is full. It never rejects: a source that throws ends
 * its stream and is logged, and a client that leaves makes the source's
 * `return()` run at once, so a generator's `finally` cleans up.
 */
import type { FastifyBaseLogger } from 'fastify'
import { FST_ERR_HTML_SSE_ITEM_INVALID, FST_ERR_HTML_SSE_SOURCE_INVALID } from './errors.js'
import { type Html, isFrame, sseMessage } from './frame.js'
import type { SseItem, SseSink, SseSource, SseSourceFactory } from './types.js'
import { describe, isThenable } from './validate.js'

/** What the pump needs of the stream it feeds. */
export interface Pumped extends SseSink {
  /** The stream has ended. */
  readonly ended: boolean
  /** Sends a frame, waiting while the socket is full; false once the stream ended. */
  sendFrame(frame: string): Promise<boolean>
  /** What to call if the stream ends while the source is being read (null: nothing). */
  onEnd(stop: (() => void) | null): void
  /** The source is done: `failed` when it threw. */
  sourceDone(failed: boolean): void
}

type AnyIterator = Iterator<SseItem> | AsyncIterator<SseItem>

/** The iterator of a source: its async one when it has both. */
function iteratorOf(source: SseSource): AnyIterator {
  return Symbol.asyncIterator in source
    ? (source as AsyncIterable<SseItem>)[Symbol.asyncIterator]()
    : (source as Iterable<SseItem>)[Symbol.iterator]()
}

/** Calls an iterator's `return()`, logging what it throws or rejects with. */
function returnIterator(iterator: AnyIterator, log: FastifyBaseLogger): void {
  const failed = (err: unknown) => log.error({ err }, 'fastify-html-sse: the stream source threw while closing')
  try {
    const result = iterator.return?.()
    if (isThenable(result)) Promise.resolve(result).catch(failed)
  } catch (err) {
    failed(err)
  }
}

/** True for what `reply.sse()` takes as a source (rather than options). */
export function isSource(value: unknown): value is SseSource {
  return value !== null && typeof value === 'object' && (Symbol.asyncIterator in value || Symbol.iterator in value)
}

/**
 * Lets go of a source that will not be read (a refused, HEAD or abandoned
 * request): an iterator made before `reply.sse()` may hold a listener or a
 * stream, and `return()` releases it. A generator that never started runs
 * nothing.
 */
export function release(source: SseSource, log: FastifyBaseLogger): void {
  let iterator: AnyIterator
  try {
    iterator = iteratorOf(source)
  } catch (err) {
    log.debug({ err }, 'fastify-html-sse: the source of a stream that did not open could not be released')
    return
  }
  returnIterator(iterator, log)
}

/** The frame of one item a source yielded. */
async function frameOfItem(value: unknown): Promise<string> {
  const item = isThenable(value) ? await value : value
  if (typeof item === 'string') return isFrame(item) ? item : sseMessage(item)
  if (item !== null && typeof item === 'object' && 'html' in item) {
    const { html, event, id, retry } = item as { html: Html; event?: string; id?: string; retry?: number }
    return sseMessage(html, event ?? 'message', { id, retry })
  }
  throw new FST_ERR_HTML_SSE_ITEM_INVALID(describe(item))
}

/** Sends the items of `source` to `stream`, then tells it the source is done. Never rejects. */
export async function pump(
  stream: Pumped,
  source: SseSource | SseSourceFactory,
  log: FastifyBaseLogger
): Promise<void> {
  let iterator: AnyIterator
  try {
    const made = typeof source === 'function' ? source(stream) : source
    if (!isSource(made)) {
      // An async function returns a promise: its rejection must not go unhandled.
      if (isThenable(made)) Promise.resolve(made).catch(() => {})
      throw new FST_ERR_HTML_SSE_SOURCE_INVALID(`a function returning ${describe(made)}`)
    }
    iterator = iteratorOf(made)
  } catch (err) {
    log.error({ err }, 'fastify-html-sse: the stream source could not be started; the stream was ended')
    stream.sourceDone(true)
    return
  }
  let finished = false
  // When the client leaves, return() runs the generator's `finally` now, not at its next yield.
  stream.onEnd(() => {
    if (!finished) returnIterator(iterator, log)
  })
  let failed = false
  try {
    while (!stream.ended) {
      const step = await iterator.next()
      if (step.done === true) break
      if (!(await stream.sendFrame(await frameOfItem(step.value)))) break
    }
    finished = true
  } catch (err) {
    finished = true
    failed = true
    // After the client left, an abort inside the source is how it was told to stop.
    if (stream.ended) log.debug({ err }, 'fastify-html-sse: the stream source threw after the stream closed')
    else log.error({ err }, 'fastify-html-sse: the stream source threw; the stream was ended')
    returnIterator(iterator, log)
  } finally {
    stream.onEnd(null)
    stream.sourceDone(failed)
  }
}
