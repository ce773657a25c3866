/**
 * Helpers for your own tests: `fastify-html-sse/testing`. One SSE client,
 * `openEvents`, and its short form, `collectEvents`.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import { createParser } from 'eventsource-parser'
import {
  FST_ERR_HTML_SSE_COLLECT_RESPONSE,
  FST_ERR_HTML_SSE_COLLECT_TIMEOUT,
  FST_ERR_HTML_SSE_OPTION_INVALID
} from './errors.js'
import { abortable, type Opened, openInjected, openRequest, openSocket, type TestableApp } from './testing/transport.js'

export type { TestableApp }

/** One event as its frame gave it: what `eventsource-parser` dispatches. */
export interface ParsedEvent {
  /** The frame's `event:` field; `undefined` when it names none (a browser dispatches that as `message`). */
  event?: string | undefined
  /** The data, lines joined with LF. */
  data: string
  /** The frame's own `id:` field, when it has one. */
  id?: string | undefined
}

/** One event as `collectEvents` returns it. */
export interface CollectedEvent {
  /** The event type (`message` when the frame names none). */
  event: string
  /** The data, lines joined with LF. */
  data: string
  /** The frame's own `id:` field, when it has one. */
  id: string | undefined
}

/** Options of `openEvents`. */
export interface OpenEventsOptions {
  /** Request headers, e.g. `{ 'last-event-id': '…' }`. `accept: text/event-stream` is sent unless overridden. */
  headers?: Record<string, string> | undefined
  /**
   * For an app: `'inject'` streams the response through `app.inject()`: no
   * port, and it works for HTTP/1.1, HTTP/2 and HTTPS apps alike. `'socket'`
   * opens a real loopback HTTP/1.1 connection to the app's server (whether or
   * not it listens), for a test about what the wire carries; plain HTTP/1.1
   * apps only. A base URL is always reached over a real socket.
   * @default 'inject' for an app
   */
  transport?: 'inject' | 'socket' | undefined
  /**
   * Read at most this many bytes a second (checked every 10 ms, against the
   * time since the head came, so a late timer catches up), as a slow but steady
   * client would; unread bytes stay queued, and a socket fills behind them.
   * @default unlimited: read as fast as the bytes come
   */
  bytesPerSecond?: number | undefined
  /**
   * Aborting gives up: before the head, `openEvents` rejects with the signal's
   * reason (and hangs up a head that comes later); after it, the client closes.
   */
  signal?: AbortSignal | undefined
}

/** One open SSE response, parsed as it arrives. */
export interface SseClient {
  /** The response status. */
  readonly status: number
  /** The response headers. */
  readonly headers: IncomingHttpHeaders
  /** The body as it arrives (an `http.IncomingMessage` over a socket): pause it to stop reading. */
  readonly body: Readable
  /** The events so far, as their frames gave them. */
  readonly events: ParsedEvent[]
  /** The comments so far (`: text` lines), without the colon and first space. */
  readonly comments: string[]
  /** The body text read so far. */
  readonly raw: string
  /**
   * Resolves to `events` (the live array: it goes on growing) once at least
   * `n` have arrived. Rejects with
   * `FST_ERR_HTML_SSE_COLLECT_TIMEOUT` when the stream ends first or after
   * `timeoutMs` (5000 unless told), and with `FST_ERR_HTML_SSE_COLLECT_RESPONSE`
   * when the response is not a 200 `text/event-stream`.
   */
  waitFor(n: number, timeoutMs?: number): Promise<ParsedEvent[]>
  /** Resolves when the response ends or its connection closes, for either side's reason. */
  readonly ended: Promise<void>
  /** Hangs up, as a browser tab that closes; resolves once the app has seen the client go (for an app) or the socket is closed (for a URL). */
  close(): Promise<void>
}

/**
 * Requests `url` as an SSE client would and parses what arrives with
 * `eventsource-parser`; resolves once the response head is in, whatever its
 * status (a test may expect a 503). `target` is an app (reached through
 * `inject` or a loopback `socket`, see `transport`) or the base URL of a
 * listening server, such as what `app.listen()` resolves to, which `url` is
 * resolved against.
 *
 * @example
 * ```ts
 * const client = await openEvents(app, '/events')
 * const [first] = await client.waitFor(1)
 * await client.close()
 * ```
 */
export async function openEvents(
  target: TestableApp | string,
  url: string,
  options: OpenEventsOptions = {}
): Promise<SseClient> {
  const { headers = {}, bytesPerSecond, signal } = options
  const transport = options.transport ?? (typeof target === 'string' ? 'socket' : 'inject')
  if (transport !== 'inject' && transport !== 'socket') {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('transport', `must be 'inject' or 'socket', got ${String(transport)}`)
  }
  if (bytesPerSecond !== undefined && !(Number.isFinite(bytesPerSecond) && bytesPerSecond > 0)) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID(
      'bytesPerSecond',
      `must be a positive number, got ${String(bytesPerSecond)}`
    )
  }
  const requestHeaders = { accept: 'text/event-stream', ...headers }
  let opening: Promise<Opened>
  if (typeof target === 'string') {
    const href = new URL(url, target)
    if (href.protocol !== 'http:') {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('target', `must be an http:// URL or an app, got ${href.protocol}`)
    }
    if (transport !== 'socket') {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('transport', "'inject' needs an app, not a URL")
    }
    signal?.throwIfAborted()
    opening = openRequest(href, requestHeaders, signal, async () => {})
  } else {
    await target.ready()
    signal?.throwIfAborted()
    opening =
      transport === 'inject'
        ? openInjected(target, url, requestHeaders)
        : openSocket(target, url, requestHeaders, signal)
  }
  const head = await abortable(opening, signal)
  const client = listenTo(head, url, bytesPerSecond)
  if (signal !== undefined) {
    const onAbort = () => void client.close()
    signal.addEventListener('abort', onAbort, { once: true })
    void client.ended.then(() => signal.removeEventListener('abort', onAbort))
    // Aborted between the head and here: the listener came too late to hear it.
    if (signal.aborted) onAbort()
  }
  return client
}

/** Options of `collectEvents`. */
export interface CollectEventsOptions {
  /** How many events to wait for. */
  count: number
  /** Give up after this long. @default 5000 */
  timeoutMs?: number | undefined
  /** Request headers, e.g. `{ 'last-event-id': '…' }`. */
  headers?: Record<string, string> | undefined
  /** As for `openEvents`. @default 'inject' */
  transport?: 'inject' | 'socket' | undefined
}

/**
 * `openEvents` in one call: requests `url` from `app` as an SSE client would,
 * resolves to the first `count` events, then disconnects, as a browser tab that
 * closes. Nothing is left open: an `app.close()` right after is prompt. Rejects
 * with a coded error on timeout, when the stream ends early, or when the
 * response is not an event stream.
 *
 * @example
 * ```ts
 * const [first] = await collectEvents(app, '/events', { count: 1 })
 * t.equal(first.data, <Button>Update #1</Button>)
 * ```
 */
export async function collectEvents(
  app: TestableApp,
  url: string,
  options: CollectEventsOptions
): Promise<CollectedEvent[]> {
  const { count, timeoutMs = 5000, headers, transport } = options
  await app.ready()
  const giveUp = new AbortController()
  const timer = setTimeout(
    () => giveUp.abort(new FST_ERR_HTML_SSE_COLLECT_TIMEOUT(0, count, url, timeoutMs)),
    timeoutMs
  )
  let client: SseClient | undefined
  try {
    client = await openEvents(app, url, { headers, transport, signal: giveUp.signal })
    // The abort comes first: it closes the client, and waitFor reports how many came.
    const events = await client.waitFor(count, timeoutMs)
    return events.slice(0, count).map(({ event = 'message', data, id }) => ({ event, data, id }))
  } finally {
    clearTimeout(timer)
    await client?.close()
  }
}

/** Reads and parses the body of `head` (paced when asked) and makes the client around it. */
function listenTo(head: Opened, url: string, bytesPerSecond: number | undefined): SseClient {
  const { status, headers, body } = head
  const type = String(headers['content-type'] ?? '')
  const isEventStream = status === 200 && type.startsWith('text/event-stream')
  const events: ParsedEvent[] = []
  const comments: string[] = []
  const waiters: Array<() => void> = []
  let raw = ''
  let done = false
  let closing: Promise<void> | undefined
  const parser = createParser({
    onEvent: (event) => {
      events.push(event)
      for (const w of waiters.splice(0)) w()
    },
    onComment: (comment) => comments.push(comment)
  })
  let ended!: () => void
  const client: SseClient = {
    status,
    headers,
    body,
    events,
    comments,
    get raw() {
      return raw
    },
    ended: new Promise<void>((resolve) => {
      ended = resolve
    }),
    waitFor(n, ms = 5000) {
      if (!isEventStream) return Promise.reject(new FST_ERR_HTML_SSE_COLLECT_RESPONSE(url, status, type || 'none'))
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new FST_ERR_HTML_SSE_COLLECT_TIMEOUT(events.length, n, url, ms)), ms)
        const check = () => {
          if (events.length >= n) {
            clearTimeout(timer)
            resolve(events)
          } else if (done) {
            clearTimeout(timer)
            reject(new FST_ERR_HTML_SSE_COLLECT_TIMEOUT(events.length, n, url, ms))
          } else waiters.push(check)
        }
        check()
      })
    },
    close() {
      closing ??= head.hangUp()
      return closing
    }
  }
  body.setEncoding('utf8')
  const take = (chunk: string) => {
    raw += chunk
    parser.feed(chunk)
  }
  let pacer: NodeJS.Timeout | undefined
  if (bytesPerSecond === undefined) body.on('data', take)
  else {
    // Reads what the pace allows since the start, so a late timer catches up instead of slowing the pace.
    const began = performance.now()
    let read = 0
    pacer = setInterval(() => {
      const allowed = Math.floor(((performance.now() - began) / 1000) * bytesPerSecond) - read
      if (allowed <= 0 || body.readableLength === 0) {
        body.read(0)
        return
      }
      // A string of at most `allowed` characters; an event stream of ASCII is one byte a character.
      const chunk: string | null = body.read(Math.min(allowed, body.readableLength))
      /* c8 ignore next */
      if (chunk === null) return
      read += chunk.length
      take(chunk)
    }, 10)
    body.on('readable', () => {})
  }
  const finish = () => {
    clearInterval(pacer)
    done = true
    ended()
    for (const w of waiters.splice(0)) w()
  }
  body.on('end', finish)
  body.on('close', finish)
  body.on('error', () => {})
  return client
}
