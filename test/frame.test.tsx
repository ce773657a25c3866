import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { sseComment, sseMessage } from '../lib/index.js'
import { parseAll } from './helpers/sse.js'

/** What a conforming client must dispatch as `data` for `html`. */
const expected = (html: string) => html.replace(/\r\n|\r/g, '\n')

const PIECES = [
  'a',
  '',
  ' lead',
  '\tTab',
  '\r',
  '\n',
  '\r\n',
  '\u2028',
  '\u0085',
  '😀',
  '\0',
  '<p class="x">',
  '::',
  'data: x'
]

function* mixes(): Generator<string> {
  for (const a of PIECES) {
    yield a
    for (const b of PIECES) {
      yield a + b
      for (const c of PIECES) yield a + b + c
    }
  }
  yield '\n\n\n'
  yield '\r\r\n\n\r'
  yield '\r\n'.repeat(5)
  yield '\nleading and trailing\n'
}

/** Feeds the frame's UTF-8 bytes to a parser, split at byte `at`, as a socket could deliver them. */
function parseSplit(frame: string, at: number) {
  const bytes = Buffer.from(frame)
  const decoder = new TextDecoder()
  return parseAll([decoder.decode(bytes.subarray(0, at), { stream: true }), decoder.decode(bytes.subarray(at))])
}

test('every mix of CR, LF, CRLF, blanks, Unicode and NUL round-trips exactly', async (t) => {
  let checked = 0
  for (const html of mixes()) {
    const frame = sseMessage(html, 'update', { id: '7' })
    if (frame.includes('\r')) t.fail(`CR on the wire for ${JSON.stringify(html)}`)
    const events = parseAll(frame)
    if (
      events.length !== 1 ||
      events[0]?.data !== expected(html) ||
      events[0]?.event !== 'update' ||
      events[0]?.id !== '7'
    ) {
      t.fail(`round trip of ${encodeURIComponent(html.toWellFormed())}`)
    }
    checked++
  }
  t.equal(checked, 1 + PIECES.length + PIECES.length ** 2 + PIECES.length ** 3 + 3, 'all mixes checked')
})

test('split at every byte offset, the frame still parses to the same single event', async (t) => {
  const samples = ['', 'a\r\nb\rc\nd', '\n<li>😀</li>\n', ' x\t\u2028\u0085\0', '\r\n\r\n']
  for (const [n, html] of samples.entries()) {
    const frame = sseMessage(html, 'split', { id: 'é' })
    const length = Buffer.byteLength(frame)
    for (let at = 0; at <= length; at++) {
      const events = parseSplit(frame, at)
      if (events.length !== 1 || events[0]?.data !== expected(html) || events[0]?.id !== 'é') {
        t.fail(`split at ${at} of sample ${n}`)
      }
    }
    t.pass(`sample ${n} at all ${length + 1} offsets`)
  }
})

test('message events carry no event line; fields come in a fixed order; only LF', async (t) => {
  t.equal(sseMessage('<b>hi</b>'), 'data: <b>hi</b>\n\n')
  t.equal(sseMessage('<b>hi</b>', 'message'), 'data: <b>hi</b>\n\n')
  t.equal(sseMessage('a\r\nb', 'tick', { id: '1', retry: 500 }), 'event: tick\nid: 1\nretry: 500\ndata: a\ndata: b\n\n')
  t.equal(sseMessage(''), 'data: \n\n', 'empty html still has one data line')
  t.same(parseAll(sseMessage('')), [{ id: undefined, event: undefined, data: '' }], 'and dispatches an empty event')
  t.equal(
    sseMessage('x', 'e', { id: '' }),
    'event: e\nid: \ndata: x\n\n',
    'an empty id is allowed (it clears the last id)'
  )
})

test('leading spaces and tabs of a line survive', async (t) => {
  const html = '  <ul>\n\t<li> one </li>\n  </ul>'
  t.equal(parseAll(sseMessage(html))[0]?.data, html)
})

test('lone surrogates never throw and reach the client as U+FFFD', async (t) => {
  const html = 'a\uD800b\n\uDFFFc'
  const frame = sseMessage(html)
  const events = parseSplit(frame, 3)
  t.equal(events[0]?.data, html.toWellFormed())
})

test('a 1 MB fragment of many lines round-trips', async (t) => {
  const line = '<tr><td class="cell">0123456789</td><td>😀 é</td></tr>'
  const html = Array.from(
    { length: 20_000 },
    (_, i) => `${line}${i % 3 === 0 ? '\r\n' : i % 3 === 1 ? '\n' : '\r'}`
  ).join('')
  t.ok(html.length > 1_000_000)
  const frame = sseMessage(html, 'big')
  const events = parseAll(frame)
  t.equal(events.length, 1)
  t.equal(events[0]?.data, expected(html))
  t.equal(frame.match(/^data: /gm)?.length, 20_001, 'one data line per line, the trailing line break included')
})

test('no html can dispatch a second event or name a field', async (t) => {
  const hostile = [
    'x\n\nevent: reset\ndata: owned',
    'x\r\rid: 999\r\rdata: y',
    'x\nretry: 1\n',
    '\n\nevent: a\n\n',
    ': comment\n\ndata: z'
  ]
  for (const html of hostile) {
    const events = parseAll(sseMessage(html))
    t.equal(events.length, 1, JSON.stringify(html))
    t.equal(events[0]?.event, undefined)
    t.equal(events[0]?.id, undefined)
    t.equal(events[0]?.data, expected(html))
  }
})

test('bad event, id and retry throw typed, coded errors', async (t) => {
  const cases: Array<[() => unknown, ErrorConstructor, string]> = [
    [() => sseMessage('x', 'a\nevent: b'), TypeError, 'FST_ERR_HTML_SSE_EVENT_NEWLINE'],
    [() => sseMessage('x', 'a\rb'), TypeError, 'FST_ERR_HTML_SSE_EVENT_NEWLINE'],
    [() => sseMessage('x', ''), TypeError, 'FST_ERR_HTML_SSE_EVENT_EMPTY'],
    [() => sseMessage('x', 5 as unknown as string), TypeError, 'FST_ERR_HTML_SSE_EVENT_EMPTY'],
    [() => sseMessage('x', 'e', { id: '1\n2' }), TypeError, 'FST_ERR_HTML_SSE_ID_INVALID'],
    [() => sseMessage('x', 'e', { id: '1\r' }), TypeError, 'FST_ERR_HTML_SSE_ID_INVALID'],
    [() => sseMessage('x', 'e', { id: 'a\0b' }), TypeError, 'FST_ERR_HTML_SSE_ID_INVALID'],
    [() => sseMessage('x', 'e', { id: 7 as unknown as string }), TypeError, 'FST_ERR_HTML_SSE_ID_INVALID'],
    [() => sseMessage('x', 'e', { retry: -1 }), RangeError, 'FST_ERR_HTML_SSE_RETRY_INVALID'],
    [() => sseMessage('x', 'e', { retry: 1.5 }), RangeError, 'FST_ERR_HTML_SSE_RETRY_INVALID'],
    [() => sseMessage('x', 'e', { retry: Number.NaN }), RangeError, 'FST_ERR_HTML_SSE_RETRY_INVALID'],
    [() => sseMessage('x', 'e', { retry: 2 ** 53 }), RangeError, 'FST_ERR_HTML_SSE_RETRY_INVALID'],
    [() => sseMessage('x', 'e', { retry: '10' as unknown as number }), RangeError, 'FST_ERR_HTML_SSE_RETRY_INVALID'],
    [() => sseMessage(42 as unknown as string), TypeError, 'FST_ERR_HTML_SSE_HTML_INVALID'],
    [() => sseMessage(null as unknown as string), TypeError, 'FST_ERR_HTML_SSE_HTML_INVALID'],
    [() => sseComment({} as unknown as string), TypeError, 'FST_ERR_HTML_SSE_HTML_INVALID']
  ]
  for (const [call, Class, code] of cases) {
    t.throws(call, { code }, code)
    try {
      call()
    } catch (err) {
      t.ok(err instanceof Class, `${code} is a ${Class.name}`)
      t.match((err as Error).message, /^fastify-html-sse:/)
    }
  }
})

test('a string gives a string; an async component gives a promise of the same frame', async (t) => {
  async function Slow({ n }: { n: number }) {
    await sleep(1)
    return <li class="n">{n}</li>
  }
  const sync = sseMessage(<li class="n">{1}</li>)
  t.type(sync, 'string')
  const pending = sseMessage(<Slow n={1} />, 'item', { id: '3' })
  t.type(pending, Promise)
  t.equal(await pending, sseMessage(<li class="n">{1}</li>, 'item', { id: '3' }))
  await t.rejects(sseMessage(Promise.resolve(5 as unknown as string)), { code: 'FST_ERR_HTML_SSE_HTML_INVALID' })
  t.throws(
    () => sseMessage(Promise.resolve('x'), 'a\nb'),
    { code: 'FST_ERR_HTML_SSE_EVENT_NEWLINE' },
    'fields are checked at once'
  )
})

test('sseComment frames comments that dispatch nothing', async (t) => {
  t.equal(sseComment(), ': \n\n')
  t.equal(sseComment('keep-alive'), ': keep-alive\n\n')
  t.equal(sseComment('a\r\nb\rc'), ': a\n: b\n: c\n\n')
  t.same(parseAll(sseComment('x\n\ndata: injected\n')), [], 'no text can escape the comment')
})
