// The load client, one child process (`new Child('load', 'load.mjs')`); how it works: bench/README.md. All sockets
// read into one shared buffer; the parent drives it with the handlers at the bottom.

import net from 'node:net'
import { crc32 } from 'node:zlib'
import { createParser } from 'eventsource-parser'
import { cpuMs, serve } from './harness.mjs'
import { EVENT_END, parseHtml, renderHtml, TS_MARK } from './payload.mjs'
import { quantile } from './stats.mjs'

const hrtime = process.hrtime.bigint
const READ_BUF = Buffer.allocUnsafe(256 * 1024)
const BATCH = 500 // connects per batch
const PAT = Buffer.from(EVENT_END)
const [HEAD, SIZE, DATA, CRLF, IDENT, END] = [0, 1, 2, 3, 4, 5]
const groups = new Map()
let made = 0
let run = null // the armed measurement
let now = 0n

const group = (name) => {
  if (!groups.has(name)) groups.set(name, { name, conns: [], statuses: {}, closeHeader: 0 })
  return groups.get(name)
}

/**
 * Checks every event of one socket: exact data, seq order, no duplicate; a gap is a loss unless a reset came first.
 * `ids`: keep the id of every event, for the parent to compare with the ids the publishes returned.
 */
function verifier(expectSeq, ids = false) {
  const v = { events: 0, resets: 0, lost: 0, dups: 0, bad: 0, lastSeq: expectSeq - 1, afterReset: false, first: null }
  if (ids) v.ids = []
  const decoder = new TextDecoder()
  const parser = createParser({
    onEvent(ev) {
      if (ev.event === 'reset') {
        v.resets++
        v.afterReset = true
        return
      }
      const p = parseHtml(ev.data)
      if (!p || (ev.event ?? 'message') !== 'message' || ev.data !== renderHtml(p.seq, p.ts, p.size)) {
        v.bad++
        return
      }
      v.events++
      v.ids?.push(ev.id)
      v.first ??= p.seq
      if (p.seq <= v.lastSeq) v.dups++
      else if (p.seq > v.lastSeq + 1 && !v.afterReset) v.lost += p.seq - v.lastSeq - 1
      v.afterReset = false
      v.lastSeq = Math.max(v.lastSeq, p.seq)
    },
    onError: () => v.bad++
  })
  v.feed = (buf, s, e) => parser.feed(decoder.decode(buf.subarray(s, e), { stream: true }))
  return v
}

function onBytes(c, buf, i, end) {
  while (i < end) {
    if (c.st === HEAD) {
      const had = c.head.length
      c.head += buf.toString('latin1', i, end)
      const at = c.head.indexOf('\r\n\r\n')
      if (at < 0) return
      i += at + 4 - had
      const head = c.head.slice(0, at)
      c.head = ''
      c.status = Number(head.slice(9, 12))
      c.g.statuses[c.status] = (c.g.statuses[c.status] ?? 0) + 1
      if (/\r\nconnection: *close/i.test(head)) c.g.closeHeader++
      c.onHead?.()
      if (c.status !== 200) c.st = END
      else c.st = /\r\ntransfer-encoding: *chunked/i.test(head) ? SIZE : IDENT
    } else if (c.st === SIZE) {
      const at = buf.indexOf(10, i)
      if (at < 0 || at >= end) {
        c.line += buf.toString('latin1', i, end)
        return
      }
      c.left = Number.parseInt(c.line + buf.toString('latin1', i, at), 16)
      c.line = ''
      i = at + 1
      c.st = c.left > 0 ? DATA : END
    } else if (c.st === DATA) {
      const n = Math.min(c.left, end - i)
      body(c, buf, i, i + n)
      i += n
      c.left -= n
      if (c.left === 0) [c.st, c.crlf] = [CRLF, 2]
    } else if (c.st === CRLF) {
      i++
      if (--c.crlf === 0) c.st = SIZE
    } else if (c.st === IDENT) {
      body(c, buf, i, end)
      return
    } else return
  }
}

/** De-chunked body bytes [s, e): count events (markers may straddle reads), take latencies, verify. */
function body(c, buf, s, e) {
  c.verify?.feed(buf, s, e)
  const armed = run !== null && run.g === c.g
  if (armed && c.sum) {
    c.sum.crc = crc32(buf.subarray(s, e), c.sum.crc)
    c.sum.bytes += e - s
  }
  if (armed && run.latency) {
    c.acc += buf.toString('latin1', s, e)
    let from = 0
    for (let at = c.acc.indexOf(EVENT_END); at >= 0; at = c.acc.indexOf(EVENT_END, from)) {
      const t = c.acc.lastIndexOf(TS_MARK, at) + TS_MARK.length
      if (run.lat.length < run.latMax) run.lat.push(Number(now - BigInt(c.acc.slice(t, t + 20))) / 1e6)
      c.count++
      run.total++
      from = at + PAT.length
    }
    c.acc = c.acc.slice(from)
    return
  }
  let n = 0
  if (c.tail.length) {
    // a marker that started in the previous read
    const edge = Buffer.concat([c.tail, buf.subarray(s, Math.min(e, s + PAT.length - 1))])
    const at = edge.indexOf(PAT)
    if (at >= 0 && at < c.tail.length) n++
  }
  const view = buf.subarray(s, e)
  for (let at = view.indexOf(PAT); at >= 0; at = view.indexOf(PAT, at + PAT.length)) n++
  const keep = PAT.length - 1
  c.tail =
    view.length >= keep ? Buffer.from(view.subarray(view.length - keep)) : Buffer.concat([c.tail, view]).subarray(-keep)
  c.count += n
  if (armed) run.total += n
}

function check() {
  if (run === null) return
  const done =
    run.untilSeq !== undefined ? run.g.conns.every((c) => c.verify.lastSeq >= run.untilSeq) : run.total >= run.target
  if (!done) return
  const r = run
  run = null
  const sorted = r.latency ? Float64Array.from(r.lat).sort() : null
  process.send({
    type: 'done',
    t: Number(hrtime()),
    total: r.total,
    latency: sorted && { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99) },
    verify: verified(r.g),
    exact: r.exact ? same(r.g) : undefined
  })
}

/** How many sockets received, during the measurement, the bytes the (event-by-event) verified one did (length, CRC-32). */
function same(g) {
  const want = g.conns.find((c) => c.verify)?.sum
  let [sockets, differ] = [0, 0]
  for (const c of g.conns) {
    if (!c.sum) continue
    sockets++
    if (c.sum.crc !== want?.crc || c.sum.bytes !== want.bytes) differ++
    c.sum = null
  }
  return { sockets, differ }
}

function verified(g) {
  const out = { sockets: 0, events: 0, resets: 0, lost: 0, dups: 0, bad: 0, first: null }
  for (const { verify: v } of g.conns) {
    if (!v) continue
    out.sockets++
    for (const k of ['events', 'resets', 'lost', 'dups', 'bad']) out[k] += v[k]
    out.first ??= v.first
    if (v.ids) out.ids ??= v.ids
  }
  return out
}

/** One stream; a connect that fails before a response head is retried after a second, as a browser's EventSource would. */
function open(g, port, request, verify, retries) {
  const c = { g, count: 0, verify }
  const dial = () => {
    Object.assign(c, { st: HEAD, head: '', line: '', left: 0, crlf: 0, tail: Buffer.alloc(0), acc: '', closed: false })
    c.sock = net.connect({
      host: '127.0.0.1',
      port,
      localAddress: `127.0.0.${2 + (made++ % 8)}`,
      onread: {
        buffer: READ_BUF,
        callback(n, buf) {
          if (run?.latency) now = hrtime()
          onBytes(c, buf, 0, n)
          check()
        }
      }
    })
    c.sock.once('connect', () => c.sock.write(request))
    c.sock.on('error', (err) => (c.error = err.code))
    c.sock.once('close', () => {
      c.closed = true
      if (c.status !== undefined || g.gone || retries-- <= 0) return c.onHead()
      g.retries = (g.retries ?? 0) + 1
      setTimeout(dial, 1000)
    })
  }
  c.settled = new Promise((resolve) => (c.onHead = resolve))
  dial()
  g.conns.push(c)
  return c
}

const handlers = {
  /** Open n more sockets (GET /events with `headers`) in batches, each batch waiting for their heads unless `pace` is false. */
  async connect({ name = 'main', port, n, headers = {}, pace = true, verify = 0, seq0 = 0, retries = 0 }) {
    const g = group(name)
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`)
    const request = `GET /events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n${extra.join('')}\r\n`
    const t0 = hrtime()
    const all = []
    for (let i = 0; i < n; i += BATCH) {
      const opened = []
      for (let j = i; j < Math.min(n, i + BATCH); j++) {
        const first = g.conns.length < verify
        opened.push(open(g, port, request, first ? verifier(seq0) : null, retries).settled)
      }
      all.push(...opened)
      if (pace) await Promise.all(opened)
      else await new Promise((resolve) => setImmediate(resolve))
    }
    await Promise.all(all)
    return { ms: Number(hrtime() - t0) / 1e6, ...handlers.status({ name }) }
  },
  /**
   * Arm a measurement: done when every socket has k more events (or every verified one reached untilSeq).
   * `exact`: the verified sockets keep their ids, and every open socket's body bytes are counted and summed (CRC-32),
   * to be compared with the first verified socket's when done.
   */
  arm({ name = 'main', k, expect, untilSeq, latency = false, seq0 = 0, verify = 0, exact = false }) {
    const g = group(name)
    let checked = 0
    for (const c of g.conns) {
      c.count = 0
      if (c.status === 200 && checked++ < verify) c.verify = verifier(seq0, exact)
      c.sum = exact && c.status === 200 && !c.closed ? { crc: 0, bytes: 0 } : null
    }
    const target = k * (expect ?? g.conns.length)
    run = { g, target, untilSeq, latency, exact, lat: [], latMax: 2e6, total: 0, t0: hrtime() }
    setImmediate(check)
    return { t0: Number(run.t0) }
  },
  status({ name = 'main' }) {
    const g = group(name)
    const errors = {}
    let [closed, refusedOpen] = [0, 0]
    for (const c of g.conns) {
      if (c.closed) closed++
      else if (c.status !== 200) refusedOpen++
      if (c.error) errors[c.error] = (errors[c.error] ?? 0) + 1
    }
    const { statuses, closeHeader, retries = 0 } = g
    return { conns: g.conns.length, closed, refusedOpen, statuses, closeHeader, errors, retries, verify: verified(g) }
  },
  /** Close every socket of the group with a TCP reset (no TIME_WAIT). */
  close({ name = 'main' }) {
    const g = group(name)
    g.gone = true
    for (const c of g.conns) if (!c.closed) c.sock.resetAndDestroy()
    groups.delete(name)
  },
  cpu: cpuMs
}

serve(handlers)
