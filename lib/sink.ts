/**
 * One open stream: its connection, the write queue and backpressure, slices
 * of large frames, heartbeats, its timers (lifetime, `expiresAt`), and how it
 * ends (`signal`, `closed`, a last frame before the end).
 *
 * The reply is hijacked and frames go straight to the raw response, a shared
 * Buffer per published frame: piping a Readable through Fastify would cost
 * about 4.6 KB more per idle connection. Fastify still runs `onResponse` hooks
 * and logs the request when the response finishes.
 */
import type { FastifyBaseLogger, FastifyReply } from 'fastify'
import {
  EXPIRED_FRAME,
  HEARTBEAT,
  type Html,
  retryFrame,
  type SseMessageOptions,
  sseComment,
  sseMessage
} from './frame.js'
import { type Pumped, pump } from './pump.js'
import type { CloseReason, SseSource, SseSourceFactory } from './types.js'
import { MAX_TIMER_MS } from './validate.js'
import { judge, startWatch, type Watch, type WatchLimits } from './watch.js'

/** What a sink needs from the hub that owns it. */
export interface SinkOwner {
  remove(sink: Sink, reason: CloseReason): void
  subscribe(sink: Sink, topic: string): void
  unsubscribe(sink: Sink, topic: string): void
  /** Whether the sink has topics (only such a stream can resume exactly). */
  hasTopics(sink: Sink): boolean
  /** The sink has unsent bytes: watch its progress. */
  watch(sink: Sink): void
  /** Hands over the events published this turn, before a frame of the sink's own goes out. */
  flushTurn(): void
}

/** Who a stream is: its `Last-Event-ID`, its `member`, its client key (`maxConnectionsPerClient`); each may be null. */
export interface SinkIdentity {
  lastEventId: string | null
  member: string | null
  clientKey: string | null
}

/**
 * A frame or replay larger than this goes to the socket in slices of it, each
 * after the last drained: the bytes a slow reader accepts then show as
 * progress, where one large write would show none until it completed.
 */
export const SLICE_BYTES = 64 * 1024

type RawReply = FastifyReply['raw']

interface Queued {
  chunk: string | Buffer
  bytes: number
  resolve: ((sent: boolean) => void) | null
}

/** An HTTP/2 session, as far as the sink needs it. */
type Session = { close(): void; destroy(): void }

const kSinkOfResponse = Symbol('fastify-html-sse.sink-of-response')

function onResponseClose(this: RawReply): void {
  ;(this as unknown as Record<symbol, Sink>)[kSinkOfResponse]?.gone()
}

const SENT = Promise.resolve(true)
const NOT_SENT = Promise.resolve(false)

function byteLength(chunk: string | Buffer): number {
  return typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length
}

/** The HTTP/2 session of a response, or undefined over HTTP/1; read it before the stream ends. */
export function sessionOf(res: RawReply): Session | undefined {
  return (res as { stream?: { session?: Session | undefined } | undefined }).stream?.session
}

export class Sink implements Pumped {
  readonly lastEventId: string | null
  /** Who the stream belongs to, or null. */
  readonly member: string | null
  /** What counts as one client for `maxConnectionsPerClient`, or null. */
  readonly clientKey: string | null

  readonly #res: RawReply
  readonly #owner: SinkOwner
  readonly #log: FastifyBaseLogger
  #closed = false
  /** Its last frame waits behind unsent bytes; nothing else is taken. */
  #ending = false
  /** Nothing was written since the last heartbeat tick. */
  #idle = false
  /** The last write found the socket over its high-water mark; cleared on 'drain'. */
  #full = false
  #drainHooked = false
  #queue: Queued[] = []
  #head = 0
  #queuedBytes = 0
  /** Progress watch state, while bytes wait (an idle stream carries none). */
  #watch: Watch | null = null
  /** When the stream expires (epoch ms), or 0. */
  #expiresAt = 0
  #ac: AbortController | null = null
  #closedPromise: Promise<void> | null = null
  #resolveClosed: (() => void) | null = null
  #onEnd: (() => void) | null = null
  #lifetime: NodeJS.Timeout | null = null
  #expiry: NodeJS.Timeout | null = null

  /** `res` has its headers sent: the sink writes to it at once. */
  constructor(res: RawReply, log: FastifyBaseLogger, owner: SinkOwner, identity: SinkIdentity) {
    this.#res = res
    this.#owner = owner
    this.#log = log
    this.lastEventId = identity.lastEventId
    this.member = identity.member
    this.clientKey = identity.clientKey
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

  get ended(): boolean {
    return this.#closed
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
    this.end('server')
  }

  pump(source: SseSource | SseSourceFactory): Promise<void> {
    return pump(this, source, this.#log)
  }

  onEnd(stop: (() => void) | null): void {
    this.#onEnd = stop
  }

  /** The source is done: the stream ends with it, unless it has topics and did not fail. */
  sourceDone(failed: boolean): void {
    if (failed) this.end('error')
    else if (!this.#owner.hasTopics(this)) this.end('server')
  }

  /** The client went away (or the response was destroyed). */
  gone(): void {
    if (this.#closed) return
    // Fastify logs a request and runs onResponse when the response finishes; a
    // client that leaves first never lets it finish, so say it here.
    this.#log.info('fastify-html-sse: the client closed the stream')
    this.end('client')
  }

  endWithRetry(retryMs: number, reason: CloseReason): void {
    this.endWith(retryFrame(retryMs), reason)
  }

  /**
   * Ends the stream after `frame` (a retry hint, `expired`, `revoked`). Bytes
   * still waiting go first and the frame after them: a client that keeps
   * reading gets everything, then the frame, then the end (one that stopped is
   * dropped by the progress watch as usual). At shutdown nothing may hold
   * `app.close()`: a stream with unsent bytes is dropped instead, and its
   * HTTP/2 session let go.
   */
  endWith(frame: string, reason: CloseReason): void {
    if (this.#closed || this.#ending) return
    // What this turn published before the end is still for this stream.
    this.#owner.flushTurn()
    if (reason === 'shutdown') {
      const session = sessionOf(this.#res)
      const stuck = this.#res.writableLength > 0 || this.#head < this.#queue.length
      if (!stuck) this.#write(frame)
      this.end(reason, stuck)
      // An HTTP/2 server waits for its sessions (Fastify closes them only with
      // forceCloseConnections: true): let this one go, at once if its client stopped reading.
      if (stuck) session?.destroy()
      else session?.close()
      return
    }
    if (this.#head === this.#queue.length && !this.#full) {
      this.#write(frame)
      this.end(reason)
      return
    }
    this.#ending = true
    this.#enqueue(frame, () => this.end(reason))
  }

  /**
   * Ends the stream after `ms` (its lifetime), with a `retry:` hint of up to
   * `retryMs`, if it has topics then (added at open or by `subscribe()`): only
   * those resume exactly. A stream without topics is looked at again a
   * lifetime later.
   */
  expireAfter(ms: number, retryMs: number): void {
    this.#lifetime = setTimeout(() => {
      if (!this.#owner.hasTopics(this)) this.expireAfter(ms, retryMs)
      else this.endWithRetry(Math.floor(Math.random() * retryMs), 'lifetime')
    }, ms)
    this.#lifetime.unref()
  }

  /** At `at` (epoch ms): `expired`, then the end; no frame published later reaches it, even before the timer runs. */
  expireAt(at: number): void {
    this.#expiresAt = at
    const ms = at - Date.now()
    if (ms <= 0) {
      this.endWith(EXPIRED_FRAME, 'expired')
      return
    }
    this.#expiry = setTimeout(() => this.endWith(EXPIRED_FRAME, 'expired'), Math.min(ms, MAX_TIMER_MS))
    this.#expiry.unref()
  }

  /** Writes a published frame without waiting; false when the socket is over its high-water mark (then yield). */
  write(chunk: Buffer | string): boolean {
    if (this.#closed || this.#ending) return true
    if (this.#expiresAt !== 0 && Date.now() >= this.#expiresAt) {
      this.endWith(EXPIRED_FRAME, 'expired')
      return true
    }
    return this.#put(chunk, null) && !this.#full
  }

  /** Writes a frame of this stream's own, waiting while the socket is full. */
  sendFrame(frame: string): Promise<boolean> {
    if (this.#closed || this.#ending) return NOT_SENT
    // Published frames of this turn go first, in the order things happened.
    this.#owner.flushTurn()
    if (this.#fits(frame)) return this.#put(frame, null) ? SENT : NOT_SENT
    return new Promise((resolve) => this.#put(frame, resolve))
  }

  /** Nothing waits and `chunk` is small: it can be written at once. */
  #fits(chunk: Buffer | string): boolean {
    return this.#head === this.#queue.length && !this.#full && byteLength(chunk) <= SLICE_BYTES
  }

  /** Writes `chunk` at once if it fits (true), else queues it, large ones to go in slices (false). */
  #put(chunk: Buffer | string, resolve: ((sent: boolean) => void) | null): boolean {
    this.#idle = false
    if (this.#fits(chunk)) {
      if (!this.#write(chunk)) this.#markFull()
      return true
    }
    this.#enqueue(chunk, resolve)
    if (!this.#full) this.#flush()
    return false
  }

  /** Called by the heartbeat timer: a comment line on a stream that wrote nothing since the last tick. */
  heartbeat(): void {
    if (this.#idle && this.#head === this.#queue.length && !this.#full) this.#res.write(HEARTBEAT)
    this.#idle = true
  }

  /** Called by the watcher while bytes wait: drops a client that no longer reads (`judge`); false: unwatch. */
  check(now: number, limits: WatchLimits): boolean {
    const watch = this.#watch
    if (this.#closed || watch === null) return false
    const waiting = this.#res.writableLength
    const unsent = this.#queuedBytes + waiting
    if (unsent === 0) {
      this.#watch = null
      return false
    }
    const verdict = judge(watch, now, waiting, unsent, limits)
    if (verdict === 'reading') return true
    this.#log.info(
      verdict === 'dropped'
        ? 'fastify-html-sse: a client fell more than maxBufferedBytes behind; its stream was closed'
        : 'fastify-html-sse: a client accepted no bytes for writeTimeoutMs; its stream was closed'
    )
    this.end(verdict, true)
    return false
  }

  #write(chunk: Buffer | string): boolean {
    if (this.#watch !== null) this.#watch.written += byteLength(chunk)
    return this.#res.write(chunk)
  }

  #enqueue(chunk: Buffer | string, resolve: ((sent: boolean) => void) | null): void {
    const bytes = byteLength(chunk)
    this.#queue.push({ chunk, bytes, resolve })
    this.#queuedBytes += bytes
    this.#startWatch()
  }

  /** Bytes wait: the hub's watcher checks this sink's progress until none do. */
  #startWatch(): void {
    if (this.#watch !== null) return
    this.#watch = startWatch(Date.now(), this.#res.writableLength)
    this.#owner.watch(this)
  }

  #markFull(): void {
    this.#full = true
    this.#startWatch()
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
      if (item.bytes > SLICE_BYTES) {
        // One slice now, the rest when it drained.
        const bytes = typeof item.chunk === 'string' ? Buffer.from(item.chunk) : item.chunk
        item.chunk = bytes.subarray(SLICE_BYTES)
        item.bytes = bytes.length - SLICE_BYTES
        this.#queuedBytes -= SLICE_BYTES
        if (!this.#write(bytes.subarray(0, SLICE_BYTES))) {
          this.#markFull()
          break
        }
        continue
      }
      queue[this.#head++] = undefined as unknown as Queued
      this.#queuedBytes -= item.bytes
      const flowing = this.#write(item.chunk)
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

  /** Ends the stream once; `destroy` drops the connection instead of ending the response. */
  end(reason: CloseReason, destroy = false): void {
    if (this.#closed) return
    if (!destroy) this.#owner.flushTurn()
    this.#closed = true
    if (this.#lifetime !== null) clearTimeout(this.#lifetime)
    if (this.#expiry !== null) clearTimeout(this.#expiry)
    this.#watch = null
    this.#owner.remove(this, reason)
    for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i]?.resolve?.(false)
    this.#queue = []
    this.#head = 0
    this.#queuedBytes = 0
    this.#onEnd?.()
    this.#ac?.abort()
    this.#resolveClosed?.()
    if (destroy) this.#res.destroy()
    else if (!this.#res.destroyed) this.#res.end()
  }
}
