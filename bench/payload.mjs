// Shared payload for the fan-out benchmark: a 3-line HTML fragment of ~300
// bytes. The render is deterministic in (seq, ts), so the verifier in the
// load client can rebuild the exact expected HTML from the values it finds.

const FILL =
  'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor ' +
  'incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud ' +
  'exercitation ullamco laboris nisi ut aliquip'

/** Fixed-width decimal (keeps the payload size constant). */
function pad(value, width) {
  const s = String(value)
  return s.length >= width ? s : '0'.repeat(width - s.length) + s
}

/**
 * @param {number} seq  message sequence number (within the server's life)
 * @param {bigint} ts   process.hrtime.bigint() at publish time (CLOCK_MONOTONIC, ns)
 * @returns {string} three lines joined by "\n", no trailing newline
 */
export function renderHtml(seq, ts) {
  return (
    `<div class="row" id="r${pad(seq, 8)}" data-t="${pad(ts, 20)}">\n` +
    `  <span class="cell">${FILL}</span>\n` +
    '</div>'
  )
}

/** Pulls (seq, ts) back out of a rendered fragment; null if it does not look like one. */
const PARSE = /^<div class="row" id="r(\d{8})" data-t="(\d{20})">\n/
export function parseHtml(html) {
  const m = PARSE.exec(html)
  if (m === null) return null
  return { seq: Number(m[1]), ts: BigInt(m[2]) }
}

/** The wire bytes a plain SSE `message` event carries for `html` (one data: line per line). */
export function frameHtml(html) {
  return `data: ${html.replaceAll('\n', '\ndata: ')}\n\n`
}

/** Every event ends with the last HTML line followed by the blank-line terminator. */
export const EVENT_END = '</div>\n\n'
/** Marker in front of the timestamp (latency mode). */
export const TS_MARK = 'data-t="'
