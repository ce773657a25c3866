/**
 * One connection: the queue, backpressure, `maxBufferedBytes`, heartbeats,
 * `signal` and `closed`.
 *
 * The reply is hijacked and frames are written straight to the raw response: a
 * published frame is one `write` of a shared Buffer per client. Handing Fastify
 * a Readable to pipe instead costs about 4.6 KB per idle connection (the stream,
 * the pipe and two end-of-stream watchers), doubling a connection's memory.
 * Fastify still runs `onResponse` hooks and logs the request when the response
 * finishes: it listens for that from the start of every request.
 */
import type { FastifyBaseLogger, FastifyReply } from 'fastify'
import type { BrokerEvent } from './broker/types.js'
import { FST_ERR_HTML_SSE_ITEM_INVALID, FST_ERR_HTML_SSE_SOURCE_INVALID } from './errors.js'
import { describe, type Html, isFrame, isThenable, type SseMessageOptions, sseComment, sseMessage } from './frame.js'

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

/** What a sink needs from the hub that owns it. */
export interface SinkOwner {
  remove(sink: Sink, dropped: boolean): void
  subscribe(sink: Sink, topic: string): void
  unsubscribe(sink: Sink, topic: string): void
}

type RawReply = FastifyReply['raw']

interface Queued {
  chunk: string | Buffer
  bytes: number
  resolve: ((sent: boolean) => void) | null
}

const HEARTBEAT = Buffer.from(':\n')
const kSinkOfResponse = Symbol('fastify-html-sse.sink-of-response')

function onResponseClose(this: RawReply): void {
  ;(this as unknown as Record<symbol, Sink>)[kSinkOfResponse]?.gone()
}

const SENT = Promise.resolve(true)
const NOT_SENT = Promise.resolve(false)

export class Sink implements SseSink {
  readonly lastEventId: string | null
  /** @internal The topics this sink is subscribed to (few: an array is lighter than a Set). */
  readonly topics: string[] = []
  /** @internal Live events held back while a replay is under way; null when live. */
  pending: BrokerEvent[] | null = null
  /** @internal Nothing was written since the last heartbeat tick. */
  idle = false

  readonly #res: RawReply
  readonly #owner: SinkOwner
  readonly #log: FastifyBaseLogger
  readonly #max: number
  #closed = false
  /** The last write found the socket over its high-water mark; cleared on 'drain'. */
  #full = false
  #drainHooked = false
  #queue: Queued[] = []
  #head = 0
  #queuedBytes = 0
  #ac: AbortController | null = null
  #closedPromise: Promise<void> | null = null
  #resolveClosed: (() => void) | null = null
  #stopSource: (() => void) | null = null

  /** `res` must have its headers sent: the sink writes to it at once. */
  constructor(
    res: RawReply,
    log: FastifyBaseLogger,
    owner: SinkOwner,
    maxBufferedBytes: number,
    lastEventId: string | null
  ) {
    this.#res = res
    this.#owner = owner
    this.#log = log
    this.#max = maxBufferedBytes
    this.lastEventId = lastEventId
    // One shared listener instead of a closure per connection.
    ;(res as unknown as Record<symbol, Sink>)[kSinkOfResponse] = this
    res.on('close', onResponseClose)
  }

  get signal(): AbortSignal {
    if (this.#ac === null) {
      this.#ac = new AbortController()
      if (this.#closed) this.#ac.abort()
    }
    return this.#ac.signal
  }

  get closed(): Promise<void> {
    if (this.#closedPromise === null) {
      this.#closedPromise = this.#closed
        ? Promise.resolve()
        : new Promise((resolve) => {
            this.#resolveClosed = resolve
          })
    }
    return this.#closedPromise
  }

  async send(html: Html, event: string = 'message', options?: SseMessageOptions): Promise<boolean> {
    const frame = sseMessage(html, event, options)
    return this.sendFrame(typeof frame === 'string' ? frame : await frame)
  }

  comment(text?: string): Promise<boolean> {
    return this.sendFrame(sseComment(text))
  }

  subscribe(topic: string): void {
    if (!this.#closed) this.#owner.subscribe(this, topic)
  }

  unsubscribe(topic: string): void {
    this.#owner.unsubscribe(this, topic)
  }

  close(): void {
    this.#end(false, false)
  }

  /** @internal The client went away (or the response was destroyed). */
  gone(): void {
    if (this.#closed) return
    // Fastify logs a request and runs onResponse when the response finishes; a
    // client that leaves first never lets it finish, so say it here.
    this.#log.info('fastify-html-sse: the client closed the stream')
    this.#end(false, false)
  }

  /** @internal Ends the stream; drops the connection when unsent bytes would hold it open. */
  shutdown(): void {
    this.#end(this.#res.writableLength > 0, false)
    // On Node < 24 an HTTP/2 server waits for idle sessions (Fastify closes them only with
    // forceCloseConnections: true): let the session that carried this stream go once it is done.
    ;(this.#res as { stream?: { session?: { close(): void } } }).stream?.session?.close()
  }

  /**
   * @internal Writes a published frame without waiting. Returns false when the
   * socket is over its high-water mark (the caller may yield to let it drain).
   * Past `maxBufferedBytes` of unsent bytes the stream is dropped.
   */
  write(chunk: Buffer | string): boolean {
    if (this.#closed) return true
    this.idle = false
    if (this.#head === this.#queue.length) {
      if (this.#res.write(chunk)) return true
      this.#markFull()
    } else {
      this.#enqueue(chunk, null)
    }
    if (this.#queuedBytes + this.#res.writableLength > this.#max) this.#end(true, true)
    return false
  }

  /** @internal Writes a frame of this stream's own, waiting while the socket is full. */
  sendFrame(frame: string): Promise<boolean> {
    if (this.#closed) return NOT_SENT
    this.idle = false
    if (this.#head === this.#queue.length && !this.#full) {
      if (!this.#res.write(frame)) this.#markFull()
      return SENT
    }
    return new Promise((resolve) => {
      this.#enqueue(frame, resolve)
      if (this.#queuedBytes + this.#res.writableLength > this.#max) this.#end(true, true)
    })
  }

  /** @internal Called by the heartbeat timer. */
  heartbeat(): void {
    if (this.idle && this.#head === this.#queue.length && !this.#full) {
      this.#res.write(HEARTBEAT)
    }
    this.idle = true
  }

  /** @internal Sends the items of `source`, then ends the stream unless it has topics. */
  async pump(source: SseSource): Promise<void> {
    if (
      source === null ||
      typeof source !== 'object' ||
      !(Symbol.asyncIterator in source || Symbol.iterator in source)
    ) {
      this.#log.error(
        { err: new FST_ERR_HTML_SSE_SOURCE_INVALID(`a function returning ${describe(source)}`) },
        'fastify-html-sse: the source function did not return an iterable; the stream was ended'
      )
      this.close()
      return
    }
    const iterator =
      Symbol.asyncIterator in source
        ? (source as AsyncIterable<SseItem>)[Symbol.asyncIterator]()
        : (source as Iterable<SseItem>)[Symbol.iterator]()
    let finished = false
    // When the client leaves, return() runs the generator's `finally` now, not at its next yield.
    this.#stopSource = () => {
      if (!finished) this.#returnSource(iterator)
    }
    try {
      while (!this.#closed) {
        const step = await iterator.next()
        if (step.done === true) break
        if (!(await this.#sendItem(step.value))) break
      }
      finished = true
    } catch (err) {
      finished = true
      // After the client left, an abort inside the source is how it was told to stop.
      if (this.#closed) this.#log.debug({ err }, 'fastify-html-sse: the stream source threw after the stream closed')
      else this.#log.error({ err }, 'fastify-html-sse: the stream source threw; the stream was ended')
      if (iterator.return !== undefined) this.#returnSource(iterator)
    } finally {
      this.#stopSource = null
      if (this.topics.length === 0) this.close()
    }
  }

  #returnSource(iterator: Iterator<SseItem> | AsyncIterator<SseItem>): void {
    try {
      const result = iterator.return?.()
      if (isThenable(result)) {
        Promise.resolve(result).catch((err: unknown) => {
          this.#log.error({ err }, 'fastify-html-sse: the stream source threw while closing')
        })
      }
    } catch (err) {
      this.#log.error({ err }, 'fastify-html-sse: the stream source threw while closing')
    }
  }

  async #sendItem(value: unknown): Promise<boolean> {
    const item = isThenable(value) ? await value : value
    if (typeof item === 'string') return this.sendFrame(isFrame(item) ? item : sseMessage(item))
    if (item !== null && typeof item === 'object' && 'html' in item) {
      const { html, event, id, retry } = item as { html: Html; event?: string; id?: string; retry?: number }
      const frame = sseMessage(html, event ?? 'message', { id, retry })
      return this.sendFrame(typeof frame === 'string' ? frame : await frame)
    }
    throw new FST_ERR_HTML_SSE_ITEM_INVALID(describe(item))
  }

  #enqueue(chunk: Buffer | string, resolve: ((sent: boolean) => void) | null): void {
    const bytes = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length
    this.#queue.push({ chunk, bytes, resolve })
    this.#queuedBytes += bytes
  }

  #markFull(): void {
    this.#full = true
    if (this.#drainHooked) return
    // Hooked on first need: an idle connection carries no drain listener.
    this.#drainHooked = true
    this.#res.on('drain', () => {
      this.#full = false
      this.#flush()
    })
  }

  #flush(): void {
    const queue = this.#queue
    while (this.#head < queue.length && !this.#closed) {
      const item = queue[this.#head] as Queued
      queue[this.#head++] = undefined as unknown as Queued
      this.#queuedBytes -= item.bytes
      const flowing = this.#res.write(item.chunk)
      item.resolve?.(true)
      if (!flowing) {
        this.#markFull()
        break
      }
    }
    if (this.#head === queue.length) {
      this.#queue = []
      this.#head = 0
    }
  }

  #end(destroy: boolean, dropped: boolean): void {
    if (this.#closed) return
    this.#closed = true
    this.#owner.remove(this, dropped)
    for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i]?.resolve?.(false)
    this.#queue = []
    this.#head = 0
    this.#queuedBytes = 0
    this.#stopSource?.()
    this.#ac?.abort()
    this.#resolveClosed?.()
    if (dropped)
      this.#log.info('fastify-html-sse: a client fell more than maxBufferedBytes behind; its stream was closed')
    if (destroy) this.#res.destroy()
    else if (!this.#res.destroyed) this.#res.end()
  }
}
