/**
 * SSE framing for HTML: pure functions, no Fastify.
 *
 * The wire format follows the WHATWG "server-sent events" section: every CR,
 * LF or CRLF in the HTML starts a new `data:` line, fields that cannot hold a
 * line break are checked, and only LF is ever written.
 */
import {
  FST_ERR_HTML_SSE_EVENT_EMPTY,
  FST_ERR_HTML_SSE_EVENT_NEWLINE,
  FST_ERR_HTML_SSE_HTML_INVALID,
  FST_ERR_HTML_SSE_ID_INVALID,
  FST_ERR_HTML_SSE_RETRY_INVALID
} from './errors.js'
import { describe, isIntegerIn, isThenable } from './validate.js'

/** What `sseMessage` accepts as HTML: a `JSX.Element` of `@kitajs/html` or a plain string. */
export type Html = string | Promise<string>

/** Optional fields of one frame. */
export interface SseMessageOptions {
  /** The event id (`id:`), what the browser sends back as `Last-Event-ID`. No CR, LF or NUL. */
  id?: string | undefined
  /** The reconnection delay the browser should use, in milliseconds (`retry:`). */
  retry?: number | undefined
}

const LINE_BREAK = /\r\n|\r|\n/g
const HAS_LINE_BREAK = /[\r\n]/
const BAD_ID = /[\r\n\0]/

/** Throws unless `event` can stand in an `event:` field. */
export function checkEvent(event: unknown): asserts event is string {
  if (typeof event !== 'string' || event.length === 0) throw new FST_ERR_HTML_SSE_EVENT_EMPTY()
  if (HAS_LINE_BREAK.test(event)) throw new FST_ERR_HTML_SSE_EVENT_NEWLINE()
}

/** Throws unless `id` can stand in an `id:` field. */
export function checkId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || BAD_ID.test(id)) throw new FST_ERR_HTML_SSE_ID_INVALID()
}

/** Throws unless `retry` is a non-negative safe integer. */
export function checkRetry(retry: unknown): asserts retry is number {
  if (!isIntegerIn(retry, 0)) {
    throw new FST_ERR_HTML_SSE_RETRY_INVALID(typeof retry === 'number' ? retry : typeof retry)
  }
}

/** The field lines before `data:`: `event:` (unless "message"), `id:`, `retry:`. Validates them. */
function fieldLines(event: unknown, options: SseMessageOptions | undefined): string {
  let out = ''
  if (event !== 'message') {
    checkEvent(event)
    out = `event: ${event}\n`
  }
  if (options != null) {
    if (options.id !== undefined) {
      checkId(options.id)
      out += `id: ${options.id}\n`
    }
    if (options.retry !== undefined) {
      checkRetry(options.retry)
      out += `retry: ${options.retry}\n`
    }
  }
  return out
}

/** One `data:` line per line of `html`, always at least one. */
function dataLines(html: string): string {
  if (!HAS_LINE_BREAK.test(html)) return `data: ${html}\n`
  return `data: ${html.replace(LINE_BREAK, '\ndata: ')}\n`
}

function frame(fields: string, html: unknown): string {
  if (typeof html !== 'string') throw new FST_ERR_HTML_SSE_HTML_INVALID(describe(html))
  return `${fields}${dataLines(html)}\n`
}

/**
 * Frames HTML as one SSE event: `event:` (unless `message`), `id:`, `retry:`,
 * one `data:` line per line of HTML, then a blank line.
 *
 * A string in gives a string out; an async component (a promise) gives a promise.
 * A bad `event` or `id` throws a `TypeError`, a bad `retry` a `RangeError`, each with a code.
 *
 * @param html - the HTML: a `JSX.Element` of `@kitajs/html` or a string
 * @param event - the event type @default 'message'
 * @example
 * ```tsx
 * yield sseMessage(<Button>Update #{count}</Button>, 'message')
 * ```
 */
export function sseMessage(html: string, event?: string, options?: SseMessageOptions): string
export function sseMessage(html: Promise<string>, event?: string, options?: SseMessageOptions): Promise<string>
export function sseMessage(html: Html, event?: string, options?: SseMessageOptions): Html
export function sseMessage(html: Html, event: string = 'message', options?: SseMessageOptions): Html {
  const fields = fieldLines(event, options)
  if (isThenable(html)) return Promise.resolve(html).then((resolved) => frame(fields, resolved))
  return frame(fields, html)
}

/**
 * A comment frame: `: text` for each line of `text`, then a blank line.
 * Clients ignore it; proxies see traffic.
 *
 * @param text - the comment @default ''
 */
export function sseComment(text: string = ''): string {
  if (typeof text !== 'string') throw new FST_ERR_HTML_SSE_HTML_INVALID(describe(text))
  return `: ${text.replace(LINE_BREAK, '\n: ')}\n\n`
}

/** Frames HTML without an id: what `publish` hands the broker, which adds the id. */
export function frameBody(html: string, event: string, retry: number | undefined): string {
  return frame(fieldLines(event, retry === undefined ? undefined : { retry }), html)
}

// Exactly the shapes sseMessage and sseComment produce: one event, or comments.
const FRAME =
  /^(?:(?::[^\r\n]*\n)+|(?:event: [^\r\n]+\n)?(?:id: [^\r\n\0]*\n)?(?:retry: \d+\n)?(?:data: [^\r\n]*\n)+)\n$/

/**
 * True when `text` is a complete frame of the shape `sseMessage` or `sseComment`
 * makes. Such a string dispatches at most one event, so a source may pass it through.
 */
export function isFrame(text: string): boolean {
  const c = text.charCodeAt(0)
  // e(vent) i(d) r(etry) d(ata) or ':'
  if (c !== 0x65 && c !== 0x69 && c !== 0x72 && c !== 0x64 && c !== 0x3a) return false
  if (!text.endsWith('\n\n')) return false
  return FRAME.test(text)
}

// The frames the plugin writes of its own accord.

/** A heartbeat: one comment line, only ever between frames. */
export const HEARTBEAT = Buffer.from(':\n')

/**
 * A frame that tells the client to reconnect after `ms` (a refusal, a drain,
 * the end of a lifetime). A named event without data: an EventSource applies
 * `retry:` while parsing and dispatches nothing, and htmx 4's `hx-sse` applies
 * `retry:` only from an event with data or a name.
 */
export function retryFrame(ms: number): string {
  return `event: retry\nretry: ${ms}\n\n`
}

/**
 * The `reset` event sent when a `Last-Event-ID` cannot be resumed. Its id is the
 * newest id (or empty, which clears the browser's), so the next reconnect
 * resumes from here instead of resetting again.
 */
export function resetFrame(head: string | null): string {
  return sseMessage('', 'reset', { id: head ?? '' })
}

/** The last event of a stream whose `expiresAt` came: named, with a data line, so every client dispatches it. */
export const EXPIRED_FRAME = 'event: expired\ndata: \n\n'

/** The last event of a stream ended by `app.sse.disconnect()`: named, with a data line, so every client dispatches it. */
export const REVOKED_FRAME = 'event: revoked\ndata: \n\n'
