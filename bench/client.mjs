// Load client child of the fan-out benchmark: `node bench/client.mjs`, driven
// by the parent over IPC. It holds N raw TCP sockets (node:net) to one server,
// each with one `GET /events HTTP/1.1` request, and counts SSE events by
// de-chunking the response bytes and counting the end-of-event marker
// `</div>\n\n` (the last HTML line plus the blank line) with Buffer#indexOf.
// All sockets read into one shared buffer (net `onread`), so reading
// allocates nothing per read.
//
// Modes while a measurement is armed:
//   count    - count events per socket; done when every socket has k.
//   latency  - also take the receive time (one hrtime per read) and the
//              publish time embedded in the HTML (data-t="..."), per event.
//   verify   - (with either) socket 0's body also goes through
//              eventsource-parser; every event must be a `message` whose data
//              is exactly renderHtml(seq, ts) with consecutive seq numbers.

import net from 'node:net'
import { createParser } from 'eventsource-parser'
import { EVENT_END, parseHtml, renderHtml, TS_MARK } from './payload.mjs'

const hrtime = process.hrtime.bigint
const READ_BUF = Buffer.allocUnsafe(256 * 1024)
const PAT = Buffer.from(EVENT_END)
const PLEN = PAT.length
const PAT0 = PAT[0]

const ST_HEAD = 0
const ST_SIZE = 1
const ST_DATA = 2
const ST_CRLF = 3
const ST_IDENT = 4
const ST_END = 5

/**
 * Connection groups: one per server the client is attached to (the parent
 * keeps a `raw` reference server and the kind under test connected at the
 * same time, and measures them back to back). Only the armed group counts.
 */
const groups = new Map()
let active = null // the armed group
function groupOf(name) {
  let g = groups.get(name)
  if (!g) {
    g = { name, port: 0, conns: [], request: Buffer.alloc(0), headersOk: 0 }
    groups.set(name, g)
  }
  return g
}

// measurement state
let armed = false
let mode = 'count'
let _perSocket = 0
let target = 0
let total = 0
let cpu0 = null
let tArm = 0n
let lat = null // Float64Array of latencies in µs (latency mode)
let latN = 0
let now = 0n // receive time of the current read (latency mode)
let verify = null
let problems = [] // protocol errors, unexpected closes

class Conn {
  constructor(g, index) {
    this.g = g
    this.index = index
    this.st = ST_HEAD
    this.head = ''
    this.size = 0
    this.sizeDigits = 0
    this.ext = false
    this.left = 0
    this.crlf = 0
    this.part = 0 // how many bytes of PAT the body seen so far ends with
    this.count = 0
    this.acc = '' // latency mode: undelivered body text
    this.socket = null
    this.closed = false
  }
}

function problem(text) {
  if (problems.length < 20) problems.push(text)
}

/** Parse one read's bytes [i, end) of connection c: status line + headers, then chunked or identity body. */
function onBytes(c, buf, i, end) {
  while (i < end) {
    switch (c.st) {
      case ST_HEAD: {
        const before = c.head.length
        c.head += buf.toString('latin1', i, end)
        const idx = c.head.indexOf('\r\n\r\n')
        if (idx < 0) {
          if (c.head.length > 16384) {
            problem(`socket ${c.index}: response head too long`)
            c.st = ST_END
          }
          return
        }
        const head = c.head.slice(0, idx)
        i += idx + 4 - before
        c.head = ''
        if (!head.startsWith('HTTP/1.1 200')) {
          problem(`socket ${c.index}: ${head.split('\r\n')[0]}`)
          c.st = ST_END
          return
        }
        if (!/\r\ncontent-type: *text\/event-stream/i.test(head))
          problem(`socket ${c.index}: no text/event-stream content-type`)
        c.st = /\r\ntransfer-encoding: *chunked/i.test(head) ? ST_SIZE : ST_IDENT
        c.g.headersOk++
        break
      }
      case ST_SIZE: {
        while (i < end) {
          const b = buf[i++]
          if (b === 10) {
            if (c.sizeDigits === 0) {
              problem(`socket ${c.index}: empty chunk size`)
              c.st = ST_END
              return
            }
            if (c.size === 0) {
              c.st = ST_END // last-chunk: the server ended the stream
              if (armed && c.g === active) problem(`socket ${c.index}: server ended the response`)
              return
            }
            c.left = c.size
            c.size = 0
            c.sizeDigits = 0
            c.ext = false
            c.st = ST_DATA
            break
          }
          if (c.ext || b === 13) continue
          if (b === 59) {
            c.ext = true // chunk extension, ignored
            continue
          }
          let v
          if (b >= 48 && b <= 57) v = b - 48
          else if (b >= 97 && b <= 102) v = b - 87
          else if (b >= 65 && b <= 70) v = b - 55
          else {
            problem(`socket ${c.index}: bad chunk size byte ${b}`)
            c.st = ST_END
            return
          }
          c.size = c.size * 16 + v
          c.sizeDigits++
        }
        break
      }
      case ST_DATA: {
        const n = Math.min(c.left, end - i)
        body(c, buf, i, i + n)
        i += n
        c.left -= n
        if (c.left === 0) {
          c.st = ST_CRLF
          c.crlf = 0
        }
        break
      }
      case ST_CRLF: {
        while (i < end && c.crlf < 2) {
          if (buf[i] !== (c.crlf === 0 ? 13 : 10)) {
            problem(`socket ${c.index}: chunk not followed by CRLF`)
            c.st = ST_END
            return
          }
          i++
          c.crlf++
        }
        if (c.crlf === 2) c.st = ST_SIZE
        break
      }
      case ST_IDENT:
        body(c, buf, i, end)
        return
      default:
        return
    }
  }
}

/** Body bytes [s, e) of connection c (already de-chunked). */
function body(c, buf, s, e) {
  if (e <= s) return
  const counted = c.g === active
  if (verify !== null && c.index === 0 && counted) verify.feed(buf, s, e)
  if (mode === 'latency' && armed && counted) {
    latencyBody(c, buf, s, e)
    return
  }
  let n = 0
  let p = s
  let j = c.part
  if (j > 0) {
    // continue a marker that started in an earlier read / chunk
    while (j < PLEN && p < e && buf[p] === PAT[j]) {
      j++
      p++
    }
    if (j === PLEN) {
      n++
    } else if (p === e) {
      c.part = j
      return
    } else {
      p = s // mismatch; the marker cannot overlap itself, so search again from s
    }
  }
  if (p < e) {
    const view = buf.subarray(p, e)
    let k = view.indexOf(PAT)
    while (k !== -1) {
      n++
      k = view.indexOf(PAT, k + PLEN)
    }
    // longest proper suffix of the slice that is a prefix of the marker
    let part = 0
    const len = e - p
    for (let l = Math.min(len, PLEN - 1); l > 0; l--) {
      if (buf[e - l] !== PAT0) continue
      let ok = true
      for (let q = 1; q < l; q++) {
        if (buf[e - l + q] !== PAT[q]) {
          ok = false
          break
        }
      }
      if (ok) {
        part = l
        break
      }
    }
    c.part = part
  } else {
    c.part = 0
  }
  if (n > 0) {
    c.count += n
    if (counted) total += n
  }
}

function latencyBody(c, buf, s, e) {
  c.acc += buf.toString('latin1', s, e)
  let idx = c.acc.indexOf(EVENT_END)
  if (idx < 0) return
  let from = 0
  while (idx >= 0) {
    const t = c.acc.lastIndexOf(TS_MARK, idx)
    if (t >= from) {
      const ts = BigInt(c.acc.slice(t + TS_MARK.length, t + TS_MARK.length + 20))
      if (latN < lat.length) lat[latN++] = Number(now - ts) / 1000
    } else {
      problem(`socket ${c.index}: event without timestamp`)
    }
    c.count++
    total++
    from = idx + PLEN
    idx = c.acc.indexOf(EVENT_END, from)
  }
  c.acc = c.acc.slice(from)
}

/** eventsource-parser over socket 0, checking every event byte for byte. */
function makeVerifier(seq0, expected) {
  const decoder = new TextDecoder('utf-8')
  const state = { events: 0, errors: [], nextSeq: seq0, ids: 0, comments: 0, retries: 0 }
  const fail = (text) => {
    if (state.errors.length < 5) state.errors.push(text)
  }
  const parser = createParser({
    onEvent(ev) {
      state.events++
      if (ev.event !== undefined && ev.event !== 'message') fail(`event type ${JSON.stringify(ev.event)}`)
      if (ev.id !== undefined) state.ids++
      const parsed = parseHtml(ev.data)
      if (parsed === null) {
        fail(`unrecognised data: ${JSON.stringify(ev.data.slice(0, 120))}`)
        return
      }
      const want = renderHtml(parsed.seq, parsed.ts)
      if (ev.data !== want) fail(`data differs for seq ${parsed.seq}: got ${JSON.stringify(ev.data.slice(0, 200))}`)
      if (parsed.seq !== state.nextSeq) fail(`seq ${parsed.seq}, expected ${state.nextSeq}`)
      state.nextSeq = parsed.seq + 1
    },
    onComment() {
      state.comments++
    },
    onRetry() {
      state.retries++
    },
    onError(err) {
      fail(`parser error: ${err.message}`)
    }
  })
  return {
    feed(buf, s, e) {
      parser.feed(decoder.decode(buf.subarray(s, e), { stream: true }))
    },
    result() {
      if (state.events !== expected) fail(`socket 0 parsed ${state.events} events, expected ${expected}`)
      return {
        events: state.events,
        ids: state.ids,
        comments: state.comments,
        retries: state.retries,
        errors: state.errors
      }
    }
  }
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[i]
}

function finish() {
  if (!armed) return
  armed = false
  const t = hrtime()
  const cpu = process.cpuUsage(cpu0)
  let min = Infinity
  let max = 0
  for (const c of active.conns) {
    if (c.count < min) min = c.count
    if (c.count > max) max = c.count
  }
  const out = {
    type: 'done',
    t: Number(t),
    wallNs: Number(t - tArm),
    cpuMs: (cpu.user + cpu.system) / 1000,
    sysMs: cpu.system / 1000,
    total,
    min,
    max,
    problems
  }
  if (verify !== null) {
    out.verify = verify.result()
    verify = null
  }
  if (lat !== null) {
    const sorted = lat.subarray(0, latN).sort()
    out.latency = {
      n: latN,
      p50: percentile(sorted, 0.5),
      p90: percentile(sorted, 0.9),
      p99: percentile(sorted, 0.99),
      max: sorted.length ? sorted[sorted.length - 1] : null
    }
    lat = null
  }
  process.send(out)
}

function makeConn(g, index) {
  const c = new Conn(g, index)
  c.socket = net.connect({
    host: '127.0.0.1',
    port: g.port,
    onread: {
      buffer: READ_BUF,
      callback(nread, buf) {
        if (lat !== null) now = hrtime()
        onBytes(c, buf, 0, nread)
        if (armed && total >= target) finish()
      }
    }
  })
  c.socket.on('error', (err) => {
    if (!c.closed) problem(`socket ${index}: ${err.code ?? err.message}`)
  })
  c.socket.on('close', () => {
    if (!c.closed) {
      c.closed = true
      problem(`socket ${index}: closed by server`)
    }
  })
  const ready = new Promise((resolve) => {
    c.socket.once('connect', () => {
      c.socket.write(g.request)
      resolve()
    })
    c.socket.once('close', resolve)
  })
  return { c, ready }
}

async function connect({ group = 'main', port, n, batch = 200 }) {
  const g = groupOf(group)
  if (port !== g.port) {
    for (const c of g.conns) {
      c.closed = true
      c.socket.destroy()
    }
    g.conns = []
    g.headersOk = 0
    g.port = port
    g.request = Buffer.from(
      `GET /events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n`,
      'latin1'
    )
  }
  while (g.conns.length > n) {
    const c = g.conns.pop()
    c.closed = true
    if (c.st !== ST_HEAD) g.headersOk--
    c.socket.destroy()
  }
  while (g.conns.length < n) {
    const ready = []
    const upto = Math.min(n, g.conns.length + batch)
    while (g.conns.length < upto) {
      const made = makeConn(g, g.conns.length)
      g.conns.push(made.c)
      ready.push(made.ready)
    }
    await Promise.all(ready)
  }
  return { open: g.conns.length, headersOk: g.headersOk, problems }
}

function arm({ group = 'main', k, mode: m = 'count', verify: v = false, seq0 = 0, latCapacity = 0 }) {
  const g = groupOf(group)
  active = g
  problems = []
  mode = m
  _perSocket = k
  target = k * g.conns.length
  total = 0
  for (const c of g.conns) {
    c.count = 0
    c.acc = ''
    if (c.part !== 0) problem(`socket ${c.index}: armed in the middle of an event`)
  }
  verify = v && g.conns.length > 0 ? makeVerifier(seq0, k) : null
  lat = m === 'latency' ? new Float64Array(latCapacity || target) : null
  latN = 0
  cpu0 = process.cpuUsage()
  tArm = hrtime()
  armed = true
  return {}
}

function status({ group = 'main' } = {}) {
  const g = groupOf(group)
  let min = Infinity
  let max = 0
  for (const c of g.conns) {
    if (c.count < min) min = c.count
    if (c.count > max) max = c.count
  }
  return { armed, total, target, min, max, headersOk: g.headersOk, open: g.conns.length, problems }
}

function disarm() {
  armed = false
  verify = null
  lat = null
  return active ? status({ group: active.name }) : status()
}

/**
 * CPU speed probe: a fixed integer loop, timed on this (pinned) core. On a
 * VM the same work can take much longer when the host is busy (e.g. the SMT
 * sibling of our vCPU); the parent uses this to spot disturbed measurements.
 */
function spin(n) {
  let x = 0x9e3779b9 | 0
  for (let i = 0; i < n; i++) x = (Math.imul(x ^ (x >>> 15), 0x85ebca6b) + i) | 0
  return x
}
let spinSink = 0
function calib() {
  for (let i = 0; i < 3; i++) spinSink ^= spin(100_000) // warm
  let best = Infinity
  for (let i = 0; i < 5; i++) {
    const t = process.hrtime.bigint()
    spinSink ^= spin(1_000_000)
    const d = Number(process.hrtime.bigint() - t)
    if (d < best) best = d
  }
  return { ns: best, sink: spinSink & 1 }
}

const handlers = {
  calib,
  connect,
  arm,
  status,
  disarm,
  exit: () => {
    setImmediate(() => process.exit(0))
    return {}
  }
}

process.on('message', async (msg) => {
  try {
    const result = await handlers[msg.cmd](msg.args ?? {})
    process.send({ id: msg.id, ok: true, ...result })
  } catch (err) {
    process.send({ id: msg.id, ok: false, error: String(err?.stack ?? err) })
  }
})
process.on('disconnect', () => process.exit(0))
process.send({ type: 'ready', pid: process.pid })
