// The published HTML (see bench/README.md), deterministic in (seq, ts, size) so a verifier can rebuild exactly what
// was sent, and the framing the raw servers write.

const WORDS =
  'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. '
const pad = (value, width) => String(value).padStart(width, '0')

/** The fragment for (seq, ts), `size` bytes long (at least 96). */
export function renderHtml(seq, ts, size = 300) {
  const head = `<div class="row" id="r${pad(seq, 8)}" data-t="${pad(ts, 20)}">\n  <span class="cell">`
  const tail = '</span>\n</div>'
  const n = Math.max(0, size - head.length - tail.length)
  return head + WORDS.repeat(Math.ceil(n / WORDS.length)).slice(0, n) + tail
}

const PARSE = /^<div class="row" id="r(\d{8})" data-t="(\d{20})">\n/
/** (seq, ts, size) of a rendered fragment; null when it is not one. */
export function parseHtml(html) {
  const m = PARSE.exec(html)
  return m && { seq: Number(m[1]), ts: BigInt(m[2]), size: Buffer.byteLength(html) }
}

/** The bytes of a plain SSE `message` event carrying `html`, with an optional id. */
export function frameHtml(html, id) {
  return `${id === undefined ? '' : `id: ${id}\n`}data: ${html.replaceAll('\n', '\ndata: ')}\n\n`
}

/** A better-sse serializer: better-sse writes the serialized value as one `data:` field, so split the lines here. */
export const splitLines = (html) => ` ${String(html).replaceAll('\n', '\ndata: ')}`

/** Every event ends with the last HTML line and the blank line. */
export const EVENT_END = '</div>\n\n'
/** In front of the publish time. */
export const TS_MARK = 'data-t="'
