/**
 * One connection: the queue, backpressure, the progress watch behind
 * `maxBufferedBytes` and `writeTimeoutMs`, heartbeats, `signal` and `closed`.
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

/** A sink's topics: none, one, or several. */
export type Topics = string | Set<string> | null

/**
 * Live events held for a stream while its replay is under way, up to
 * `maxBufferedBytes`; past that they are let go, and `dropped` is the id of the
 * newest one let go.
 */
export interface Pending {
  events: BrokerEvent[]
  bytes: number
  dropped: string | null
}

/** What the progress watch remembers of a sink whose bytes wait. */
export interface Watch {
  /** Bytes handed to the response since the watch began. */
  written: number
  /** The response's unsent bytes when the watch began. */
  waitingAtStart: number
  /** Bytes known flushed since the watch began, at the last progress. */
  flushed: number
  /** When bytes last moved. */
  progressAt: number
  /** When the current trend window began. */
  windowAt: number
  /** The fewest unsent bytes seen in the current window. */
  floor: number
  /** The floor of the previous window (Infinity before the first ends). */
  lastFloor: number
  /** Windows in a row whose floor rose over `maxBufferedBytes`. */
  rising: number
}

/** What the watch judges by, from the plugin's options. */
export interface WatchLimits {
  maxBufferedBytes: number
  /** 0: never. */
  writeTimeoutMs: number
  /** Over `maxBufferedBytes` with no byte accepted this long: the client stopped reading. */
  stallMs: number
  /** The trend window: a backlog whose floor rises two windows in a row cannot catch up. */
  windowMs: number
}

/** What a sink needs from the hub that owns it. */
export interface SinkOwner {
  remove(sink: Sink, reason: CloseReason): void
  subscribe(sink: Sink, topic: string): void
  unsubscribe(sink: Sink, topic: string): void
  /** The sink has unsent bytes: watch its progress. */
  watch(sink: Sink): void
  /** Hands over the events published this turn, before a frame of the sink's own goes out. */
  flushTurn(): void
}

type RawReply = FastifyReply['raw']

interface Queued {
  chunk: string | Buffer
  bytes: number
  resolve: ((sent: boolean) => void) | null
}

const HEARTBEAT = Buffer.from(':\n')
/**
 * A frame or replay larger than this goes to the socket in slices of it, each
 * after the last drained: the bytes a slow reader accepts then show as
 * progress, where one large write would show none until it completed.
 */
export const SLICE_BYTES = 64 * 1024
const kSinkOfResponse = Symbol('fastify-html-sse.sink-of-response')

function onResponseClose(this: RawReply): void {
  ;(this as unknown as Record<symbol, Sink>)[kSinkOfResponse]?.gone()
}

const SENT = Promise.resolve(true)
const NOT_SENT = Promise.resolve(false)

function byteLength(chunk: string | Buffer): number {
  return typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length
}

/**
 * A frame that tells the client to reconnect after `ms` (a spread reconnect, on
 * drain or at the end of a stream's lifetime). It is a named event without data:
 * an EventSource applies `retry:` while parsing and dispatches nothing, and
 * htmx 4's `hx-sse` applies `retry:` only from an event with data or a name.
 */
export function retryFrame(ms: number): string {
  return `event: retry\nretry: ${ms}\n\n`
}

/** An HTTP/2 session, as far as the sink needs it. */
interface Session {
  close(): void
  destroy(): void
}

/** The HTTP/2 session of a response, or undefined over HTTP/1; read it before the stream ends. */
function sessionOf(res: RawReply): Session | undefined {
  return (res as { stream?: { session?: Session | undefined } | undefined }).stream?.session
}

/** What the progress watch concludes at one check. */
type Verdict = 'reading' | 'dropped' | 'write_timeout'

/**
 * The progress watch's rules, pure: updates `watch` with one check's reading
 * (`waiting`: the response's unsent bytes; `unsent`: those and the sink's
 * queue) and says whether the client still reads. Chunked encoding adds bytes
 * that were never counted as written, so while nothing moves `flushed` only
 * falls: it never shows progress that did not happen.
 */
export function judge(watch: Watch, now: number, waiting: number, unsent: number, limits: WatchLimits): Verdict {
  const flushed = watch.written - (waiting - watch.waitingAtStart)
  if (flushed > watch.flushed) {
    watch.flushed = flushed
    watch.progressAt = now
  }
  const idleMs = now - watch.progressAt
  const over = unsent > limits.maxBufferedBytes
  if (over && idleMs >= limits.stallMs) return 'dropped'
  if (unsent < watch.floor) watch.floor = unsent
  if (now - watch.windowAt >= limits.windowMs) {
    // Its low point rose over the cap: the backlog grows faster than the client takes it.
    const rose = watch.floor > limits.maxBufferedBytes && watch.floor > watch.lastFloor
    watch.rising = rose ? watch.rising + 1 : 0
    watch.lastFloor = watch.floor
    watch.floor = unsent
    watch.windowAt = now
    if (watch.rising >= 2) return 'dropped'
  }
  if (limits.writeTimeoutMs > 0 && idleMs >= limits.writeTimeoutMs) return 'write_timeout'
  return 'reading'
}

/** The last event of a stream whose `expiresAt` came: named, with a data line, so every client dispatches it. */
export const EXPIRED_FRAME = 'event: expired\ndata: \n\n'
/** The last event of a stream ended by `app.sse.disconnect()`: named, with a data line, so every client dispatches it. */
export const REVOKED_FRAME = 'event: revoked\ndata: \n\n'

/** The iterator of a source: its async one when it has both. */
function iteratorOf(source: SseSource): Iterator<SseItem> | AsyncIterator<SseItem> {
  return Symbol.asyncIterator in source
    ? (source as AsyncIterable<SseItem>)[Symbol.asyncIterator]()
    : (source as Iterable<SseItem>)[Symbol.iterator]()
}

/** Calls an iterator's `return()`, logging what it throws or rejects with. */
function returnIterator(iterator: Iterator<unknown> | AsyncIterator<unknown>, log: FastifyBaseLogger): void {
  const failed = (err: unknown) => log.error({ err }, 'fastify-html-sse: the stream source threw while closing')
  try {
    const result = iterator.return?.()
    if (isThenable(result)) Promise.resolve(result).catch(failed)
  } catch (err) {
    failed(err)
  }
}

/**
 * Lets go of a source that will not be read (a refused, HEAD or abandoned
 * request): an iterator made before `reply.sse()` may hold a listener or a
 * stream, and `return()` releases it. A generator that never started runs
 * nothing.
 */
export function release(source: SseSource, log: FastifyBaseLogger): void {
  let iterator: Iterator<SseItem> | AsyncIterator<SseItem>
  try {
    iterator = iteratorOf(source)
  } catch (err) {
    log.debug({ err }, 'fastify-html-sse: the source of a stream that did not open could not be released')
    return
  }
  returnIterator(iterator, log)
}

/** A sink that is closed from the start: a refused, HEAD or abandoned request. */
export class ClosedSink implements SseSink {
  readonly lastEventId: string | null
  readonly closed: Promise<void> = Promise.resolve()
  #signal: AbortSignal | null = null

  constructor(lastEventId: string | null) {
    this.lastEventId = lastEventId
  }

  get signal(): AbortSignal {
    if (this.#signal === null) this.#signal = AbortSignal.abort()
    return this.#signal
  }

  send(): Promise<boolean> {
    return NOT_SENT
  }

  comment(): Promise<boolean> {
    return NOT_SENT
  }

  subscribe(): void {}

  unsubscribe(): void {}

  close(): void {}
}

export class Sink implements SseSink {
  readonly lastEventId: string | null
  /** @internal The topics this sink is subscribed to: none, one (most streams), or several. */
  topics: Topics = null
  /**
   * @internal The resume handoff: live events held while the replay is under
   * way, then the id up to which live events are skipped (the client has them:
   * it resumed from an id the broker had not yet delivered); null when live.
   */
  handoff: Pending | string | null = null
  /** @internal Nothing was written since the last heartbeat tick. */
  idle = false
  /** @internal What counts as one client for `maxConnectionsPerClient`, or null. */
  clientKey: string | null = null
  /** @internal Who the stream belongs to (`reply.sse({ member })`), or null. */
  readonly member: string | null
  /** When the stream expires (epoch ms, `reply.sse({ expiresAt })`), or 0. */
  #expiresAt = 0

  readonly #res: RawReply
  readonly #owner: SinkOwner
  readonly #log: FastifyBaseLogger
  #closed = false
  /** Its last frame (a retry hint) waits behind unsent bytes; nothing else is taken. */
  #ending = false
  /** The last write found the socket over its high-water mark; cleared on 'drain'. */
  #full = false
  #drainHooked = false
  #queue: Queued[] = []
  #head = 0
  #queuedBytes = 0
  /** Progress watch state, while bytes wait (an idle stream carries none). */
  #watch: Watch | null = null
  #ac: AbortController | null = null
  #closedPromise: Promise<void> | null = null
  #resolveClosed: (() => void) | null = null
  #stopSource: (() => void) | null = null
  #timer: NodeJS.Timeout | null = null
  #expiry: NodeJS.Timeout | null = null

  /** `res` must have its headers sent: the sink writes to it at once. */
  constructor(
    res: RawReply,
    log: FastifyBaseLogger,
    owner: SinkOwner,
    lastEventId: string | null,
    member: string | null = null
  ) {
    this.#res = res
    this.#owner = owner
    this.#log = log
    this.lastEventId = lastEventId
    this.member = member
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
    this.end('server')
  }

  /** @internal The client went away (or the response was destroyed). */
  gone(): void {
    if (this.#closed) return
    // Fastify logs a request and runs onResponse when the response finishes; a
    // client that leaves first never lets it finish, so say it here.
    this.#log.info('fastify-html-sse: the client closed the stream')
    this.end('client')
  }

  /**
   * @internal Ends the stream after a `retry:` hint of `retryMs` (drain,
   * lifetime, a broker outage during resume, a resume overflow). Bytes still
   * waiting go first and the hint after them: a client that keeps reading gets
   * everything, then the hint, then the end (a client that stopped is dropped
   * by the progress watch as usual). At shutdown nothing may hold `app.close()`:
   * a stream with unsent bytes is dropped instead, and its HTTP/2 session closed.
   */
  endWithRetry(retryMs: number, reason: CloseReason): void {
    this.endWith(retryFrame(retryMs), reason)
  }

  /** @internal Ends the stream after `frame` (a hint, `expired`, `revoked`): see `endWithRetry`. */
  endWith(frame: string, reason: CloseReason): void {
    if (this.#closed || this.#ending) return
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
   * @internal Ends the stream after `ms` (its lifetime), with a `retry:` hint of
   * up to `retryMs`, if it has topics then (added at open or by `subscribe()`):
   * only those resume exactly. A stream without topics is looked at again a
   * lifetime later.
   */
  expireAfter(ms: number, retryMs: number): void {
    this.#timer = setTimeout(() => {
      if (this.topics === null) this.expireAfter(ms, retryMs)
      else this.endWithRetry(Math.floor(Math.random() * retryMs), 'lifetime')
    }, ms)
    this.#timer.unref()
  }

  /**
   * @internal At `at` (epoch ms) the stream gets `expired` and ends; from
   * then on no published frame reaches it, even before its timer runs.
   */
  expireAt(at: number): void {
    this.#expiresAt = at
    const ms = at - Date.now()
    if (ms <= 0) {
      this.endWith(EXPIRED_FRAME, 'expired')
      return
    }
    const timer = setTimeout(() => this.endWith(EXPIRED_FRAME, 'expired'), Math.min(ms, 2 ** 31 - 1))
    timer.unref()
    this.#expiry = timer
  }

  /**
   * @internal Writes a published frame without waiting. Returns false when the
   * socket is over its high-water mark (the caller may yield to let it drain).
   */
  write(chunk: Buffer | string): boolean {
    if (this.#closed || this.#ending) return true
    if (this.#expiresAt !== 0 && Date.now() >= this.#expiresAt) {
      this.endWith(EXPIRED_FRAME, 'expired')
      return true
    }
    this.idle = false
    if (this.#head === this.#queue.length && !this.#full && byteLength(chunk) <= SLICE_BYTES) {
      if (this.#write(chunk)) return true
      this.#markFull()
    } else {
      this.#enqueue(chunk, null)
      if (!this.#full) this.#flush()
    }
    return false
  }

  /** @internal Writes a frame of this stream's own, waiting while the socket is full. */
  sendFrame(frame: string): Promise<boolean> {
    if (this.#closed || this.#ending) return NOT_SENT
    // Published frames of this turn go first, in the order things happened.
    this.#owner.flushTurn()
    this.idle = false
    if (this.#head === this.#queue.length && !this.#full && byteLength(frame) <= SLICE_BYTES) {
      if (!this.#write(frame)) this.#markFull()
      return SENT
    }
    return new Promise((resolve) => {
      this.#enqueue(frame, resolve)
      if (!this.#full) this.#flush()
    })
  }

  /** @internal Called by the heartbeat timer. */
  heartbeat(): void {
    if (this.idle && this.#head === this.#queue.length && !this.#full) {
      this.#res.write(HEARTBEAT)
    }
    this.idle = true
  }

  /**
   * @internal Called by the hub's watch timer while bytes wait; progress is
   * judged in bytes the socket accepted (large writes go in slices). A client
   * over `maxBufferedBytes` that accepts no byte for `stallMs` stopped
   * reading; one whose backlog stays over it and whose low point rises two
   * windows in a row reads slower than the stream and cannot catch up; one that
   * accepts nothing for `writeTimeoutMs` (0: never) is stalled. Each is
   * dropped: its browser reconnects and resumes. A client that keeps reading is
   * never shed, whatever one frame, burst or replay weighs.
   * Returns whether the sink still needs watching.
   */
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
    if (verdict === 'dropped') {
      this.#log.info('fastify-html-sse: a client fell more than maxBufferedBytes behind; its stream was closed')
      this.end('dropped', true)
      return false
    }
    if (verdict === 'write_timeout') {
      this.#log.info('fastify-html-sse: a client accepted no bytes for writeTimeoutMs; its stream was closed')
      this.end('write_timeout', true)
      return false
    }
    return true
  }

  /** @internal Sends the items of `source`, then ends the stream unless it has topics. Never rejects. */
  async pump(source: SseSource | SseSourceFactory): Promise<void> {
    let iterator: Iterator<SseItem> | AsyncIterator<SseItem>
    try {
      const made = typeof source === 'function' ? source(this) : source
      if (made === null || typeof made !== 'object' || !(Symbol.asyncIterator in made || Symbol.iterator in made)) {
        // An async function returns a promise: its rejection must not go unhandled.
        if (isThenable(made)) Promise.resolve(made).catch(() => {})
        throw new FST_ERR_HTML_SSE_SOURCE_INVALID(`a function returning ${describe(made)}`)
      }
      iterator = iteratorOf(made)
    } catch (err) {
      this.#log.error({ err }, 'fastify-html-sse: the stream source could not be started; the stream was ended')
      this.end('error')
      return
    }
    let finished = false
    // When the client leaves, return() runs the generator's `finally` now, not at its next yield.
    this.#stopSource = () => {
      if (!finished) returnIterator(iterator, this.#log)
    }
    let reason: CloseReason = 'server'
    try {
      while (!this.#closed) {
        const step = await iterator.next()
        if (step.done === true) break
        if (!(await this.#sendItem(step.value))) break
      }
      finished = true
    } catch (err) {
      finished = true
      reason = 'error'
      // After the client left, an abort inside the source is how it was told to stop.
      if (this.#closed) this.#log.debug({ err }, 'fastify-html-sse: the stream source threw after the stream closed')
      else this.#log.error({ err }, 'fastify-html-sse: the stream source threw; the stream was ended')
      returnIterator(iterator, this.#log)
    } finally {
      this.#stopSource = null
      if (this.topics === null || reason === 'error') this.end(reason)
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

  /** Bytes wait: the hub checks this sink's progress until none do. */
  #startWatch(): void {
    if (this.#watch !== null) return
    const now = Date.now()
    this.#watch = {
      written: 0,
      waitingAtStart: this.#res.writableLength,
      flushed: 0,
      progressAt: now,
      windowAt: now,
      floor: Number.POSITIVE_INFINITY,
      lastFloor: Number.POSITIVE_INFINITY,
      rising: 0
    }
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

  /** @internal Ends the stream once; `destroy` drops the connection instead of ending the response. */
  end(reason: CloseReason, destroy = false): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    if (this.#expiry !== null) clearTimeout(this.#expiry)
    this.#watch = null
    this.#owner.remove(this, reason)
    for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i]?.resolve?.(false)
    this.#queue = []
    this.#head = 0
    this.#queuedBytes = 0
    this.#stopSource?.()
    this.#ac?.abort()
    this.#resolveClosed?.()
    if (destroy) this.#res.destroy()
    else if (!this.#res.destroyed) this.#res.end()
  }
}
