// Redis broker vs memory broker, same run:
//   "2 instances x 1,000 clients through Redis against the memory broker:
//    events/s and p99 latency. Target >= 0.7x the memory broker's events/s."
//
//   npx tsc -p tsconfig.build.json     # ours is loaded from the build (dist/lib)
//   node bench/redis.mjs [--rounds 5] [--clients 2000] [--k 100] [--lat-rate 20] [--lat-seconds 5]
//                        [--url redis://127.0.0.1:6379] [--max-foreign 0.15] [--retries 2] [--quiet-budget 300]
//                        [--no-pin] [--no-wait] [--no-write] [--out FILE]
//   REDIS_BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" adds node flags to the server children.
//
// Kinds (alternating: memory, redis, memory, redis, ...; fresh processes each time):
//   memory  one Fastify instance, this plugin with the default memory broker, all clients on it
//   redis   two instances (A and B, one child process each), each with
//           redisBroker({ url, prefix }); half the clients on A, half on B; publishes are
//           issued on A only, so B gets every event through Redis
// Per kind and round: a verified warm-up burst (every event of one socket per
// instance parsed with eventsource-parser and compared with the exact HTML), a
// timed burst of K awaited publishes (delivered events/s over all clients),
// then publish-to-receive latency at a fixed rate.
//
// One process layout for both kinds (a 2-core machine): every server instance
// on CPU 0, the load client on CPU 1 (taskset), Redis unpinned (as it runs).
// The server side thus always has one core: the memory instance alone, or A and
// B sharing it. See bench/REDIS.md.
//
// Network: 127.0.0.1 only. Every wait has a timeout, every loop is bounded,
// children exit with the parent, and the Redis key of the run is deleted at the end.

import { execFileSync, spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { createParser } from 'eventsource-parser'
import { EVENT_END, parseHtml, renderHtml, TS_MARK } from './payload.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const hrtime = process.hrtime.bigint
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const yieldIO = () => new Promise((resolve) => setImmediate(resolve))

// =================================================================== server child

/** node bench/redis.mjs --child server <memory|redis> <url> <prefix> */
async function serverChild(kind, url, prefix) {
  const { default: Fastify } = await import('fastify')
  let srv
  try {
    const { default: htmlSse } = await import(pathToFileURL(path.join(ROOT, 'dist/lib/index.js')).href)
    let broker
    if (kind === 'redis') {
      const { redisBroker } = await import(pathToFileURL(path.join(ROOT, 'dist/lib/broker/redis.js')).href)
      broker = redisBroker({ url, prefix })
    }
    const app = Fastify({ logger: false })
    // heartbeats off (no timer traffic in a measurement); replay: the default (1000)
    await app.register(htmlSse, { heartbeatMs: 0, ...(broker ? { broker } : {}) })
    app.get('/events', (_request, reply) => {
      reply.sse({ topics: ['bench'] })
    })
    await app.listen({ host: '127.0.0.1', port: 0 })
    srv = app
  } catch (err) {
    process.send({ type: 'failed', error: String(err?.stack ?? err) })
    setImmediate(() => process.exit(1))
    return
  }
  const publish = (html) => srv.sse.publish('bench', html)
  const handlers = {
    stats: () => ({ stats: srv.sse.stats() }),
    cpu: () => {
      const c = process.cpuUsage()
      return { ms: (c.user + c.system) / 1000 }
    },
    /** K awaited publishes as fast as possible, yielding to I/O after each (as bench/server.mjs). */
    async burst({ k, seq0 }) {
      const t0 = hrtime()
      for (let i = 0; i < k; i++) {
        await publish(renderHtml(seq0 + i, hrtime()))
        await yieldIO()
      }
      return { t0: Number(t0), sendNs: Number(hrtime() - t0) }
    },
    /** `count` publishes at `rate`/s on a drift-free schedule; the timestamp is taken just before publish. */
    async paced({ rate, count, seq0 }) {
      const stepNs = Math.round(1e9 / rate)
      const start = hrtime()
      let late = 0
      for (let i = 0; i < count; i++) {
        const dueMs = ((i + 1) * stepNs - Number(hrtime() - start)) / 1e6
        if (dueMs > 0) await sleep(Math.ceil(dueMs))
        else if (dueMs < -stepNs / 1e6) late++
        await publish(renderHtml(seq0 + i, hrtime()))
      }
      return { late }
    },
    async exit() {
      // a clean close (also lets --cpu-prof write its profile)
      setImmediate(async () => {
        await Promise.race([srv.close(), sleep(3000)])
        process.exit(0)
      })
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
  process.send({ type: 'ready', port: srv.server.address().port, pid: process.pid })
}

// =================================================================== client child
// The approach of bench/client.mjs (raw node:net sockets reading into one shared
// buffer, HTTP/1.1 head + chunked de-chunking by hand, events counted by the
// end-of-event marker `</div>\n\n` with Buffer#indexOf), extended to hold
// sockets to several servers in one process and to return every latency sample.

function clientChild() {
  const READ_BUF = Buffer.allocUnsafe(256 * 1024)
  const PAT = Buffer.from(EVENT_END)
  const PLEN = PAT.length
  const ST_HEAD = 0
  const ST_SIZE = 1
  const ST_DATA = 2
  const ST_CRLF = 3
  const ST_IDENT = 4
  const ST_END = 5

  const conns = []
  let armed = false
  let mode = 'count'
  let target = 0
  let total = 0
  let cpu0 = null
  let lat = null
  let latN = 0
  let now = 0n
  let verifiers = new Map() // socket index -> verifier
  let problems = []
  let headersOk = 0

  const problem = (text) => {
    if (problems.length < 20) problems.push(text)
  }

  class Conn {
    constructor(index, group) {
      this.index = index
      this.group = group
      this.st = ST_HEAD
      this.head = ''
      this.size = 0
      this.sizeDigits = 0
      this.ext = false
      this.left = 0
      this.crlf = 0
      this.part = 0
      this.count = 0
      this.acc = ''
      this.socket = null
      this.closed = false
    }
  }

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
          c.st = /\r\ntransfer-encoding: *chunked/i.test(head) ? ST_SIZE : ST_IDENT
          headersOk++
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
                c.st = ST_END
                if (armed) problem(`socket ${c.index}: server ended the response`)
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
              c.ext = true
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

  function body(c, buf, s, e) {
    if (e <= s) return
    if (armed) verifiers.get(c.index)?.feed(buf, s, e)
    if (mode === 'latency' && armed) {
      latencyBody(c, buf, s, e)
      return
    }
    let n = 0
    let p = s
    let j = c.part
    if (j > 0) {
      while (j < PLEN && p < e && buf[p] === PAT[j]) {
        j++
        p++
      }
      if (j === PLEN) n++
      else if (p === e) {
        c.part = j
        return
      } else p = s
    }
    if (p < e) {
      const view = buf.subarray(p, e)
      let k = view.indexOf(PAT)
      while (k !== -1) {
        n++
        k = view.indexOf(PAT, k + PLEN)
      }
      let part = 0
      const len = e - p
      for (let l = Math.min(len, PLEN - 1); l > 0; l--) {
        let ok = true
        for (let q = 0; q < l; q++) {
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
    } else c.part = 0
    if (n > 0) {
      c.count += n
      total += n
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
      } else problem(`socket ${c.index}: event without timestamp`)
      c.count++
      total++
      from = idx + PLEN
      idx = c.acc.indexOf(EVENT_END, from)
    }
    c.acc = c.acc.slice(from)
  }

  /** eventsource-parser over one socket: every event exactly renderHtml(seq, ts), seq consecutive. */
  function makeVerifier(seq0, expected) {
    const decoder = new TextDecoder('utf-8')
    const st = { events: 0, errors: [], nextSeq: seq0, ids: [] }
    const fail = (t) => {
      if (st.errors.length < 5) st.errors.push(t)
    }
    const parser = createParser({
      onEvent(ev) {
        st.events++
        if (ev.event !== undefined && ev.event !== 'message') fail(`event type ${JSON.stringify(ev.event)}`)
        st.ids.push(ev.id ?? null)
        const parsed = parseHtml(ev.data)
        if (parsed === null) return fail(`unrecognised data: ${JSON.stringify(ev.data.slice(0, 120))}`)
        if (ev.data !== renderHtml(parsed.seq, parsed.ts)) fail(`data differs for seq ${parsed.seq}`)
        if (parsed.seq !== st.nextSeq) fail(`seq ${parsed.seq}, expected ${st.nextSeq}`)
        st.nextSeq = parsed.seq + 1
      },
      onError(err) {
        fail(`parser error: ${err.message}`)
      }
    })
    return {
      feed: (buf, s, e) => parser.feed(decoder.decode(buf.subarray(s, e), { stream: true })),
      result() {
        if (st.events !== expected) fail(`parsed ${st.events} events, expected ${expected}`)
        return { events: st.events, errors: st.errors, ids: st.ids }
      }
    }
  }

  function percentile(sorted, q) {
    if (sorted.length === 0) return null
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
  }

  function perGroup() {
    const g = {}
    for (const c of conns) {
      if (g[c.group] === undefined) g[c.group] = { min: Infinity, max: 0, n: 0 }
      const x = g[c.group]
      x.n++
      if (c.count < x.min) x.min = c.count
      if (c.count > x.max) x.max = c.count
    }
    return g
  }

  function finish() {
    if (!armed) return
    armed = false
    const t = hrtime()
    const cpu = process.cpuUsage(cpu0)
    const out = {
      type: 'done',
      t: Number(t),
      cpuMs: (cpu.user + cpu.system) / 1000,
      total,
      groups: perGroup(),
      problems
    }
    out.verify = {}
    for (const [index, v] of verifiers) out.verify[index] = v.result()
    verifiers = new Map()
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

  function makeConn(index, group, port) {
    const c = new Conn(index, group)
    const request = Buffer.from(
      `GET /events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n`,
      'latin1'
    )
    c.socket = net.connect({
      host: '127.0.0.1',
      port,
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
        c.socket.write(request)
        resolve()
      })
      c.socket.once('close', resolve)
    })
    return { c, ready }
  }

  /** targets: [{ port, n }]: n sockets to each; socket indexes run on across targets (group = target index). */
  async function connect({ targets, batch = 200 }) {
    for (let g = 0; g < targets.length; g++) {
      const { port, n } = targets[g]
      for (let done = 0; done < n; ) {
        const ready = []
        const upto = Math.min(n, done + batch)
        for (; done < upto; done++) {
          const made = makeConn(conns.length, g, port)
          conns.push(made.c)
          ready.push(made.ready)
        }
        await Promise.all(ready)
      }
    }
    return { open: conns.length, headersOk, problems }
  }

  function arm({ k, mode: m = 'count', verify = [], seq0 = 0 }) {
    problems = []
    mode = m
    target = k * conns.length
    total = 0
    for (const c of conns) {
      c.count = 0
      c.acc = ''
      if (c.part !== 0) problem(`socket ${c.index}: armed in the middle of an event`)
    }
    verifiers = new Map(verify.map((index) => [index, makeVerifier(seq0, k)]))
    lat = m === 'latency' ? new Float64Array(target) : null
    latN = 0
    cpu0 = process.cpuUsage()
    armed = true
    return {}
  }

  const status = () => ({ armed, total, target, groups: perGroup(), headersOk, open: conns.length, problems })

  const handlers = {
    connect,
    arm,
    status,
    disarm: () => {
      armed = false
      verifiers = new Map()
      lat = null
      return status()
    },
    cpu: () => {
      const c = process.cpuUsage()
      return { ms: (c.user + c.system) / 1000 }
    },
    exit: () => {
      for (const c of conns) {
        c.closed = true
        c.socket.destroy()
      }
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
}

// =================================================================== parent

function parseArgs(argv) {
  const o = {
    rounds: 5,
    clients: 2000,
    k: 100,
    warmK: 50,
    latRate: 20,
    latSeconds: 5,
    url: 'redis://127.0.0.1:6379',
    pin: true,
    wait: true,
    write: true,
    out: path.join(HERE, 'REDIS.md'),
    maxForeign: 0.15,
    retries: 2,
    quietBudget: 300,
    kinds: ['memory', 'redis']
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const num = (min = Number.MIN_VALUE) => {
      const v = Number(argv[++i])
      if (!Number.isFinite(v) || v < min)
        throw new Error(`${a} needs a number >= ${min === Number.MIN_VALUE ? '> 0' : min}`)
      return v
    }
    if (a === '--rounds') o.rounds = Math.round(num())
    else if (a === '--clients') o.clients = Math.round(num() / 2) * 2
    else if (a === '--k') o.k = Math.round(num())
    else if (a === '--lat-rate') o.latRate = num()
    else if (a === '--lat-seconds') o.latSeconds = num()
    else if (a === '--url') o.url = argv[++i]
    else if (a === '--kinds') {
      o.kinds = argv[++i].split(',').filter(Boolean)
      const bad = o.kinds.filter((k) => !['memory', 'redis', 'redis-1'].includes(k))
      if (bad.length || !o.kinds.includes('memory') || !o.kinds.includes('redis'))
        throw new Error('--kinds: memory and redis, optionally redis-1 (e.g. memory,redis,redis-1)')
    } else if (a === '--no-pin') o.pin = false
    else if (a === '--no-wait') o.wait = false
    else if (a === '--no-write') o.write = false
    else if (a === '--out') o.out = path.resolve(argv[++i])
    else if (a === '--max-foreign') o.maxForeign = num(0)
    else if (a === '--retries') o.retries = Math.round(num(0))
    else if (a === '--quiet-budget') o.quietBudget = num(0)
    else if (a === '--help' || a === '-h') {
      console.log(
        readFileSync(fileURLToPath(import.meta.url), 'utf8')
          .split('\n')
          .slice(0, 24)
          .join('\n')
      )
      process.exit(0)
    } else throw new Error(`unknown option ${a}`)
  }
  return o
}

class Child {
  constructor(name, args, { cpu, canPin, execArgv = [] }) {
    this.name = name
    this.pending = new Map()
    this.waiters = []
    this.early = []
    this.nextId = 1
    this.exited = false
    const pin = canPin && cpu !== undefined ? `taskset -c ${cpu} ` : ''
    // sh only sets the CPU affinity, then execs node (the IPC fd is kept)
    this.proc = spawn(
      'sh',
      ['-c', `exec ${pin}"$0" "$@"`, process.execPath, ...execArgv, fileURLToPath(import.meta.url), '--child', ...args],
      {
        cwd: ROOT,
        stdio: ['ignore', 'inherit', 'inherit', 'ipc']
      }
    )
    this.pid = this.proc.pid
    this.proc.on('message', (m) => this.onMessage(m))
    this.proc.on('exit', (code, signal) => {
      this.exited = true
      const err = new Error(`${this.name} exited (code ${code}, signal ${signal})`)
      for (const p of this.pending.values()) p.reject(err)
      this.pending.clear()
      for (const w of this.waiters) w.reject(err)
      this.waiters = []
    })
  }

  onMessage(m) {
    if (m.id !== undefined) {
      const p = this.pending.get(m.id)
      if (!p) return
      this.pending.delete(m.id)
      clearTimeout(p.timer)
      if (m.ok) p.resolve(m)
      else p.reject(new Error(`${this.name}: ${m.error}`))
      return
    }
    const i = this.waiters.findIndex((w) => w.types.includes(m.type))
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1)
      clearTimeout(w.timer)
      w.resolve(m)
    } else this.early.push(m)
  }

  rpc(cmd, args = {}, timeoutMs = 60_000) {
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited`))
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`${this.name}: ${cmd} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { resolve, reject, timer })
      this.proc.send({ id, cmd, args })
    })
  }

  waitFor(types, timeoutMs) {
    const i = this.early.findIndex((m) => types.includes(m.type))
    if (i >= 0) return Promise.resolve(this.early.splice(i, 1)[0])
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited`))
    return new Promise((resolve, reject) => {
      const w = { types, resolve, reject, timer: null }
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w)
        reject(new Error(`${this.name}: no ${types.join('/')} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.waiters.push(w)
    })
  }

  async stop() {
    if (this.exited) return
    const gone = new Promise((resolve) => this.proc.once('exit', resolve))
    try {
      await this.rpc('exit', {}, 5000)
    } catch {}
    const t = setTimeout(() => {
      if (!this.exited) this.proc.kill('SIGKILL') // our own child, by its handle
    }, 6000)
    await gone
    clearTimeout(t)
  }
}

// ---------------------------------------------------------------- CPU accounting

const CLK_TCK = 100

/** utime + stime (ms) and name of every process, kernel threads included. */
function allProcs() {
  const m = new Map()
  let dirs = []
  try {
    dirs = readdirSync('/proc')
  } catch {}
  for (const d of dirs) {
    if (!/^\d+$/.test(d)) continue
    try {
      const s = readFileSync(`/proc/${d}/stat`, 'utf8')
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
      m.set(Number(d), {
        comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')),
        ms: ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK
      })
    } catch {}
  }
  return m
}

function redisServerPids() {
  const pids = []
  for (const [pid, p] of allProcs()) if (p.comm === 'redis-server') pids.push(pid)
  return pids
}

const snap = () => ({ t: performance.now(), procs: allProcs() })

/**
 * CPU used between two snapshots: by each of our processes (`pids`: name -> pid;
 * the children, redis-server, this parent), by ksoftirqd (the kernel doing
 * network work on our behalf), and by everything else ("foreign", in CPUs).
 */
function diff(a, b, pids) {
  const wall = b.t - a.t
  const ours = new Map(Object.entries(pids).map(([name, pid]) => [pid, name]))
  const per = {}
  let foreignMs = 0
  let softirqMs = 0
  const others = []
  for (const [pid, x] of b.procs) {
    const d = x.ms - (a.procs.get(pid)?.ms ?? 0)
    if (!(d > 0)) continue
    const name = ours.get(pid)
    if (name !== undefined) per[name] = d
    else if (x.comm.startsWith('ksoftirqd')) softirqMs += d
    else {
      foreignMs += d
      others.push([x.comm, d])
    }
  }
  others.sort((p, q) => q[1] - p[1])
  return {
    wall,
    per,
    foreign: foreignMs / wall,
    softirq: softirqMs / wall,
    top: others.slice(0, 3).map(([comm, d]) => `${comm} ${(d / wall).toFixed(2)}`)
  }
}

// ---------------------------------------------------------------- statistics

function median(values) {
  const v = values.filter((x) => x != null && Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return null
  const m = v.length >> 1
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}
const fmt = (n, d = 0) =>
  n == null ? 'n/a' : n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d })

// ---------------------------------------------------------------- the run

async function parent() {
  let opt
  try {
    opt = parseArgs(process.argv.slice(2))
  } catch (err) {
    console.error(err.message)
    process.exit(2)
  }
  const started = Date.now()
  const log = (...a) => console.error(`[redis-bench ${((Date.now() - started) / 1000).toFixed(0)}s]`, ...a)

  const entry = path.join(ROOT, 'dist/lib/index.js')
  if (!existsSync(entry) || !existsSync(path.join(ROOT, 'dist/lib/broker/redis.js'))) {
    console.error('dist/lib is missing: run `npx tsc -p tsconfig.build.json` first')
    process.exit(2)
  }

  // Do not disturb another benchmark: wait while bench/fanout.mjs runs (poll 30 s, at most 20 min).
  if (opt.wait) {
    const busy = () => {
      try {
        return execFileSync('pgrep', ['-f', 'bench/fanout.mjs'], { encoding: 'utf8' }).trim() !== ''
      } catch {
        return false
      }
    }
    for (let i = 0; busy(); i++) {
      if (i >= 40) {
        console.error('bench/fanout.mjs has been running for 20 minutes; giving up (use --no-wait to run anyway)')
        process.exit(3)
      }
      if (i === 0) log('bench/fanout.mjs is running; waiting for it to finish (polling every 30 s)')
      await sleep(30_000)
    }
  }

  const nproc = os.availableParallelism()
  let canPin = false
  if (opt.pin && nproc >= 2) {
    try {
      execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' })
      execFileSync('taskset', ['-c', '1', 'true'], { stdio: 'ignore' })
      canPin = true
    } catch {}
  }
  const nofile = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
  if (nofile && nofile[1] !== 'unlimited' && Number(nofile[1]) < opt.clients + 200) {
    console.error(`ulimit -n is ${nofile[1]}; ${opt.clients} sockets need at least ${opt.clients + 200}`)
    process.exit(2)
  }

  // Redis: reachable? its version, and a key prefix of our own
  const { createClient } = await import('redis')
  const redis = createClient({ url: opt.url, socket: { reconnectStrategy: false, connectTimeout: 3000 } })
  redis.on('error', () => {})
  try {
    await redis.connect()
  } catch (err) {
    console.error(`cannot connect to Redis at ${opt.url}: ${err.message}`)
    process.exit(2)
  }
  const info = await redis.sendCommand(['INFO', 'server'])
  const redisVersion = /redis_version:(\S+)/.exec(String(info))?.[1] ?? '?'
  const prefix = `fastify-html-sse-bench:${process.pid}-${Date.now().toString(36)}:`
  const key = `${prefix}log`
  if ((await redis.exists(key)) !== 0) throw new Error(`key ${key} exists`)
  const redisPids = redisServerPids()
  let redisAffinity = 'unknown'
  try {
    if (redisPids.length)
      redisAffinity = execFileSync('taskset', ['-cp', String(redisPids[0])], { encoding: 'utf8' })
        .trim()
        .split(': ')
        .pop()
  } catch {}

  const children = new Set()
  const cleanup = async () => {
    for (const c of children) await c.stop().catch(() => {})
    children.clear()
    try {
      await redis.del(key)
    } catch {}
  }
  let interrupted = false
  const onSignal = () => {
    if (interrupted) process.exit(130)
    interrupted = true
    log('interrupted; cleaning up')
    cleanup().finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  // a last resort: the whole run never takes longer than this
  const watchdogMin = 15 + opt.rounds * 4
  setTimeout(() => {
    log(`still running after ${watchdogMin} min; giving up`)
    cleanup().finally(() => process.exit(4))
  }, watchdogMin * 60_000).unref()

  const serverArgs = process.env.REDIS_BENCH_SERVER_NODE_ARGS
    ? process.env.REDIS_BENCH_SERVER_NODE_ARGS.split(/\s+/).filter(Boolean)
    : []
  const startServer = async (name, kind) => {
    const s = new Child(name, ['server', kind, opt.url, prefix], { cpu: 0, canPin, execArgv: serverArgs })
    children.add(s)
    const m = await s.waitFor(['ready', 'failed'], 30_000)
    if (m.type === 'failed') throw new Error(`${name} failed to start: ${m.error.split('\n')[0]}`)
    s.port = m.port
    return s
  }
  const startClient = async () => {
    const c = new Child('client', ['client'], { cpu: 1, canPin })
    children.add(c)
    await c.waitFor(['ready'], 30_000)
    return c
  }
  const stopAll = async () => {
    for (const c of children) await c.stop()
    children.clear()
  }

  const half = opt.clients / 2
  const latCount = Math.round(opt.latRate * opt.latSeconds)
  const rows = [] // one per kind and round
  let seq = 0

  let quietBudgetS = opt.quietBudget
  /** Waits (at most 30 s, and --quiet-budget s per run) until other processes use at most --max-foreign CPUs. */
  async function waitQuiet(pids, what) {
    for (let i = 0; i < 30 && quietBudgetS > 0; i++) {
      const a = snap()
      await sleep(1000)
      const d = diff(a, snap(), pids)
      if (d.foreign <= opt.maxForeign) return
      quietBudgetS--
      if (i === 0)
        log(
          `waiting for a quiet machine before ${what}: other processes use ${d.foreign.toFixed(2)} CPUs (${d.top.join(', ')})`
        )
    }
  }

  /** One kind, one round: fresh processes, connect, verify, burst, latency. */
  async function runKind(kind, round) {
    const servers =
      kind === 'memory'
        ? [await startServer('memory', 'memory')]
        : kind === 'redis-1'
          ? [await startServer('A', 'redis')]
          : [await startServer('A', 'redis'), await startServer('B', 'redis')]
    const publisher = servers[0]
    const client = await startClient()
    // the processes whose CPU is ours
    const pids = { client: client.pid, parent: process.pid }
    for (const s of servers) pids[s.name] = s.pid
    redisPids.forEach((pid, i) => {
      pids[`redis${i || ''}`] = pid
    })

    // connect: the same two groups of half the clients in every kind (one instance: both groups on it)
    const targets =
      servers.length === 1
        ? [
            { port: publisher.port, n: half },
            { port: publisher.port, n: half }
          ]
        : [
            { port: servers[0].port, n: half },
            { port: servers[1].port, n: half }
          ]
    const con = await client.rpc('connect', { targets }, 120_000)
    if (con.problems.length) throw new Error(`connect: ${con.problems.slice(0, 3).join('; ')}`)
    const expect = servers.length === 1 ? [opt.clients] : [half, half]
    for (let i = 0; i < servers.length; i++) {
      const end = Date.now() + 30_000
      for (;;) {
        const { stats } = await servers[i].rpc('stats')
        if (stats.connections === expect[i] && (stats.topics.bench ?? 0) === expect[i]) break
        if (Date.now() > end)
          throw new Error(`${servers[i].name} counts ${stats.connections} connections, expected ${expect[i]}`)
        await sleep(20)
      }
    }

    const verifySockets = [0, half] // the first socket of each group: on A and on B for redis
    const row = { kind, round, problems: [] }

    /** Arm the client for k events per socket, run `act` on the publisher, wait for 'done'. */
    async function measure(k, m, act, verify = []) {
      await client.rpc('arm', { k, mode: m, verify, seq0: seq })
      const a = snap()
      const srvCpu0 = await Promise.all(servers.map((s) => s.rpc('cpu')))
      const pub = await act(seq)
      seq += k
      let done
      try {
        done = await client.waitFor(['done'], 60_000 + (m === 'latency' ? opt.latSeconds * 1000 : 0))
      } catch (err) {
        const st = await client.rpc('status').catch(() => null)
        throw new Error(`${err.message}; client status ${JSON.stringify(st?.groups)} total ${st?.total}/${st?.target}`)
      }
      const b = snap()
      const srvCpu1 = await Promise.all(servers.map((s) => s.rpc('cpu')))
      const d = diff(a, b, pids)
      for (const [g, x] of Object.entries(done.groups)) {
        if (x.min !== k || x.max !== k)
          row.problems.push(`${m}: group ${g} got ${x.min}..${x.max} events per socket, expected ${k}`)
      }
      if (done.problems.length) row.problems.push(...done.problems.slice(0, 3))
      return { pub, done, d, srvMs: srvCpu1.map((x, i) => x.ms - srvCpu0[i].ms) }
    }

    // 1. warm-up burst, verified: both sockets parse every event to the exact HTML; the same ids on A and B
    const warm = await measure(
      opt.warmK,
      'count',
      (s0) => publisher.rpc('burst', { k: opt.warmK, seq0: s0 }, 60_000),
      verifySockets
    )
    const v = warm.done.verify
    const idsA = v[0]?.ids ?? []
    const idsB = v[half]?.ids ?? []
    row.verify = {
      events: (v[0]?.events ?? 0) + (v[half]?.events ?? 0),
      errors: [...(v[0]?.errors ?? []), ...(v[half]?.errors ?? [])],
      sameIds: idsA.length > 0 && idsA.length === idsB.length && idsA.every((x, i) => x === idsB[i]),
      idSample: idsA[0] ?? null
    }
    if (row.verify.errors.length) row.problems.push(...row.verify.errors.map((e) => `verify: ${e}`))
    if (!row.verify.sameIds) row.problems.push('verify: the two verified sockets saw different event ids')

    // 2. timed burst: on a quiet machine; repeated (up to --retries times) when other processes
    //    used more than --max-foreign CPUs during it; the quietest attempt is kept
    let burst = null
    for (let attempt = 0; attempt <= opt.retries; attempt++) {
      await waitQuiet(pids, `${kind} round ${round}`)
      const b = await measure(opt.k, 'count', (s0) => publisher.rpc('burst', { k: opt.k, seq0: s0 }, 120_000))
      if (burst === null || b.d.foreign < burst.d.foreign) burst = b
      if (b.d.foreign <= opt.maxForeign) break
      log(
        `${kind} round ${round}: other processes used ${b.d.foreign.toFixed(2)} CPUs during the burst (${b.d.top.join(', ')})` +
          `${attempt < opt.retries ? '; repeating' : ''}`
      )
      row.disturbed = (row.disturbed ?? 0) + 1
    }
    const events = opt.clients * opt.k
    const wallNs = burst.done.t - burst.pub.t0
    row.eventsPerSec = events / (wallNs / 1e9)
    row.publishMs = burst.pub.sendNs / 1e6
    row.wallMs = wallNs / 1e6
    row.foreign = burst.d.foreign
    row.foreignTop = burst.d.top
    row.softirq = burst.d.softirq
    const per1k = (ms) => (ms / events) * 1000
    row.serverCpuPer1k = per1k(burst.srvMs.reduce((x, y) => x + y, 0))
    row.instanceCpuPer1k = burst.srvMs.map(per1k)
    row.clientBusy = burst.done.cpuMs / (wallNs / 1e6)
    const redisMs = Object.entries(burst.d.per)
      .filter(([k]) => k.startsWith('redis'))
      .reduce((x, [, y]) => x + y, 0)
    row.redisCpuPer1k = per1k(redisMs)
    row.serverBusy = burst.srvMs.reduce((x, y) => x + y, 0) / (wallNs / 1e6)

    // 3. latency at a fixed rate, after a 1 s warm-up at the same rate
    await waitQuiet(pids, `${kind} round ${round} latency`)
    const warmCount = Math.max(1, Math.round(opt.latRate))
    await measure(warmCount, 'count', (s0) =>
      publisher.rpc('paced', { rate: opt.latRate, count: warmCount, seq0: s0 }, 60_000)
    )
    const lat = await measure(latCount, 'latency', (s0) =>
      publisher.rpc('paced', { rate: opt.latRate, count: latCount, seq0: s0 }, 60_000 + opt.latSeconds * 2000)
    )
    row.lat = lat.done.latency
    row.latLate = lat.pub.late
    row.latForeign = lat.d.foreign

    await stopAll()
    return row
  }

  const kinds = opt.kinds
  log(
    `memory (1 instance) vs redis (2 instances), ${opt.clients} clients, K=${opt.k}, ${opt.rounds} rounds; ` +
      `pinning: ${canPin ? 'servers CPU 0, client CPU 1' : 'none'}; Redis ${redisVersion} at ${opt.url}, key ${key}`
  )
  let failed = null
  try {
    for (let round = 1; round <= opt.rounds; round++) {
      for (const kind of kinds) {
        const row = await runKind(kind, round)
        rows.push(row)
        log(
          `round ${round} ${kind}: ${fmt(row.eventsPerSec)} events/s, p50 ${fmt(row.lat?.p50 / 1000, 2)} ms, p99 ${fmt(row.lat?.p99 / 1000, 2)} ms` +
            `${row.problems.length ? `, PROBLEMS: ${row.problems.slice(0, 3).join('; ')}` : ''}`
        )
      }
    }
  } catch (err) {
    failed = err
    log(`failed: ${err.stack ?? err}`)
  } finally {
    await cleanup()
    const gone = (await redis.exists(key)) === 0
    await redis.close().catch(() => redis.destroy())
    if (!gone) log(`warning: key ${key} still exists`)
  }

  const report = render({
    opt,
    rows,
    redisVersion,
    redisAffinity,
    canPin,
    nproc,
    key,
    took: (Date.now() - started) / 1000,
    failed
  })
  console.log(report)
  if (opt.write) {
    writeFileSync(opt.out, report)
    log(`written to ${path.relative(process.cwd(), opt.out)}`)
  }
  const bad = failed || rows.some((r) => r.problems.length)
  process.exit(bad ? 1 : 0)
}

// ---------------------------------------------------------------- report

function describeBuild() {
  let git = '?'
  try {
    git = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
    if (execFileSync('git', ['status', '--porcelain', 'lib'], { cwd: ROOT, encoding: 'utf8' }).trim())
      git += ' + uncommitted changes in lib/'
  } catch {}
  let built = '?'
  try {
    built = statSync(path.join(ROOT, 'dist/lib/broker/redis.js')).mtime.toISOString()
  } catch {}
  return `dist/lib built ${built}, git ${git}`
}

function render({ opt, rows, redisVersion, redisAffinity, canPin, nproc, key, took, failed }) {
  const by = (kind) => rows.filter((r) => r.kind === kind)
  const med = (kind, f) => median(by(kind).map(f))
  const mem = by('memory')
  // per-round ratio: kind of round r / memory of round r (adjacent runs)
  const ratiosOf = (kind) =>
    by(kind)
      .map((r) => {
        const m = mem.find((x) => x.round === r.round)
        return m ? r.eventsPerSec / m.eventsPerSec : null
      })
      .filter((x) => x != null)
  const ratios = ratiosOf('redis')
  const ratioOfMedians = med('redis', (r) => r.eventsPerSec) / med('memory', (r) => r.eventsPerSec)
  const ratioMedian = median(ratios)
  let cpuModel = '?'
  try {
    cpuModel = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? '?'
  } catch {}

  const L = []
  L.push('# Redis broker vs memory broker')
  L.push('')
  L.push(
    'The issue: "2 instances × 1,000 clients through Redis against the memory broker, same run: events/s and p99 latency. Target ≥ 0.7× the memory broker\'s events/s."'
  )
  L.push('')
  L.push(`- date: ${new Date().toISOString()}`)
  L.push(
    `- command: \`node bench/redis.mjs${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(' ')}` : ''}\` (took ${(took / 60).toFixed(1)} min), after \`npx tsc -p tsconfig.build.json\``
  )
  L.push(
    `- machine: ${nproc} CPUs (${cpuModel}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.type()} ${os.release()}; node ${process.version}`
  )
  L.push(
    `- Redis ${redisVersion} at ${opt.url} (local, loopback); key \`${key}\` (unique per run, deleted at the end); redis-server CPU affinity: ${redisAffinity}`
  )
  L.push(`- ours: ${describeBuild()}; Fastify ${pkgVersion('fastify')}, node-redis ${pkgVersion('redis')}`)
  L.push(
    `- process placement: ${canPin ? 'every server instance on CPU 0, the load client on CPU 1 (`taskset -c`); redis-server and this parent unpinned' : 'no pinning'}`
  )
  L.push(
    `- rounds: ${opt.rounds}, kinds alternating (${[...opt.kinds, ...opt.kinds].join(', ')}, …), fresh processes for every kind in every round; values are medians over rounds`
  )
  if (failed) L.push(`- **the run failed**: ${String(failed.message ?? failed).split('\n')[0]}`)
  L.push('')
  L.push('## Result')
  L.push('')
  L.push(
    `| kind | instances × clients | delivered events/s | server CPU ms / 1,000 events | Redis CPU ms / 1,000 events | p50 latency | p99 latency |`
  )
  L.push('|---|---|---:|---:|---:|---:|---:|')
  const line = (kind, label, shown = kind) =>
    L.push(
      `| ${shown} | ${label} | ${fmt(med(kind, (r) => r.eventsPerSec))} | ${fmt(
        med(kind, (r) => r.serverCpuPer1k),
        2
      )} | ${
        kind !== 'memory'
          ? fmt(
              med(kind, (r) => r.redisCpuPer1k),
              2
            )
          : '–'
      } | ${fmt(med(kind, (r) => r.lat?.p50) / 1000, 2)} ms | ${fmt(med(kind, (r) => r.lat?.p99) / 1000, 2)} ms |`
    )
  line('memory', `1 × ${fmt(opt.clients)}`)
  line('redis', `2 × ${fmt(opt.clients / 2)}`)
  if (by('redis-1').length) {
    line('redis-1', `1 × ${fmt(opt.clients)}`, 'redis-1 (diagnostic)')
  }
  L.push('')
  const target = ratioMedian != null && ratioMedian >= 0.7
  L.push(
    `**redis / memory events/s: ${fmt(ratioMedian, 2)}×** (median of the per-round ratios ${ratios.map((x) => x.toFixed(2)).join(', ')}; ratio of the medians ${fmt(ratioOfMedians, 2)}×). ` +
      `Target ≥ 0.7×: **${ratioMedian == null ? 'not measured' : target ? 'met' : 'NOT met'}**.`
  )
  L.push('')
  const cpuRatio = med('redis', (r) => r.serverCpuPer1k) / med('memory', (r) => r.serverCpuPer1k)
  const busy = rows.map((r) => r.serverBusy)
  const cbusy = rows.map((r) => r.clientBusy)
  const p99Ratio = med('redis', (r) => r.lat?.p99) / med('memory', (r) => r.lat?.p99)
  L.push(
    `- Server CPU per delivered event: redis ${fmt(cpuRatio, 2)}× memory (the two instances together, Redis itself excluded; redis-server added ${fmt(
      med('redis', (r) => r.redisCpuPer1k),
      2
    )} ms per 1,000 events).`
  )
  L.push(
    `- What bounded the bursts: the server core was ${fmt(Math.min(...busy) * 100)}–${fmt(Math.max(...busy) * 100)}% busy, the load client ${fmt(Math.min(...cbusy) * 100)}–${fmt(Math.max(...cbusy) * 100)}% of its core (*Every round* below).`
  )
  L.push(
    `- p99 latency at ${opt.latRate} msg/s: redis ${fmt(p99Ratio, 2)}× memory (${fmt(med('redis', (r) => r.lat?.p99) / 1000, 2)} vs ${fmt(med('memory', (r) => r.lat?.p99) / 1000, 2)} ms). At this rate latency is mostly the fan-out itself: one event to ${fmt(opt.clients)} sockets takes ${fmt((opt.clients / med('memory', (r) => r.eventsPerSec)) * 1000, 0)} ms at the memory broker's burst rate.`
  )
  if (by('redis-1').length) {
    const r1 = median(ratiosOf('redis-1'))
    const c1 = med('redis-1', (r) => r.serverCpuPer1k) / med('memory', (r) => r.serverCpuPer1k)
    L.push(
      `- Diagnostic \`redis-1\` (one instance on the Redis broker, all ${fmt(opt.clients)} clients, same core): ${fmt(r1, 2)}× memory events/s (median of the per-round ratios ${ratiosOf(
        'redis-1'
      )
        .map((x) => x.toFixed(2))
        .join(', ')}), server CPU per event ${fmt(c1, 2)}× memory. ` +
        'It separates what the Redis path costs from what running two instances on one core costs.'
    )
  }
  L.push('')
  L.push('## Every round')
  L.push('')
  L.push(
    '| round | kind | events/s | burst wall ms | publish loop ms | server CPU busy | server CPU ms / 1k (per instance) | Redis CPU ms / 1k | client busy | ksoftirqd CPU | other CPU (burst / latency) | p50 | p90 | p99 | max | verified |'
  )
  L.push('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|')
  for (const r of rows) {
    L.push(
      `| ${r.round} | ${r.kind} | ${fmt(r.eventsPerSec)} | ${fmt(r.wallMs)} | ${fmt(r.publishMs)} | ${fmt(r.serverBusy * 100)}% | ${fmt(r.serverCpuPer1k, 2)} (${r.instanceCpuPer1k.map((x) => fmt(x, 2)).join(' + ')}) | ${r.kind !== 'memory' ? fmt(r.redisCpuPer1k, 2) : '–'} | ${fmt(r.clientBusy * 100)}% | ${fmt(r.softirq, 2)} | ${fmt(r.foreign, 2)} / ${fmt(r.latForeign, 2)}${r.foreign > opt.maxForeign && r.foreignTop.length ? ` (${r.foreignTop.join(', ')})` : ''} | ` +
        `${fmt(r.lat?.p50 / 1000, 2)} | ${fmt(r.lat?.p90 / 1000, 2)} | ${fmt(r.lat?.p99 / 1000, 2)} | ${fmt(r.lat?.max / 1000, 1)} | ${r.problems.length ? `**${r.problems.slice(0, 2).join('; ')}**` : `ok (${r.verify.events} events, ids ${r.verify.sameIds ? 'equal on both sockets' : 'differ'}, e.g. \`${r.verify.idSample}\`)`} |`
    )
  }
  L.push('')
  L.push(
    'Latency columns in ms. *server CPU busy* = CPU time of all server instances / burst wall time (they share one core, so 100% = the core is saturated). ' +
      "*client busy* = load-client CPU time / burst wall time. *ksoftirqd CPU* = CPUs used by the kernel's softirq threads during the burst (loopback network work done outside our processes). " +
      `*other CPU* = CPUs used by every other process (kernel threads included) during the kept burst / the latency run, from \`/proc/*/stat\`. Before each timed burst and latency run the script waits (≤ 30 s, ≤ ${opt.quietBudget} s per run) for other processes to use ≤ ${opt.maxForeign} CPUs; a burst during which they used more is repeated up to ${opt.retries} times and the quietest attempt is kept.`
  )
  L.push('')
  L.push('## Method')
  L.push('')
  L.push(
    `- **memory**: one Fastify 5 instance with this plugin and its default memory broker (\`register(htmlSse, { heartbeatMs: 0 })\`, replay at its default 1000), route \`reply.sse({ topics: ['bench'] })\`; all ${fmt(opt.clients)} clients on it.`
  )
  L.push(
    `- **redis**: two such instances, A and B, each its own child process with \`broker: redisBroker({ url: '${opt.url}', prefix })\`; ${fmt(opt.clients / 2)} clients on each. Every publish is issued on A (\`await app.sse.publish('bench', html)\`): it is an \`XADD\` to the stream; both A and B deliver it from their own \`XREAD BLOCK\` loop, so B's clients get every event through Redis, and so do A's (the broker has no local shortcut).`
  )
  if (opt.kinds.includes('redis-1')) {
    L.push(
      '- **redis-1** (diagnostic, opt-in with `--kinds memory,redis,redis-1`): instance A alone with `redisBroker`, all clients on it; publishes on A, delivered from its `XREAD` loop.'
    )
  }
  L.push(
    `- **Process placement** (${nproc} CPUs): every server instance pinned to CPU 0, the load client to CPU 1, with \`taskset -c\`; redis-server runs as it was started (affinity ${redisAffinity}) and the parent (idle during measurements) unpinned. So the server side has one core in both kinds: the memory instance alone, or A and B sharing it. This is the like-for-like comparison on this machine (the same CPU for the SSE servers in both kinds); it measures what the Redis path costs per event, not what a second core would add. With one core per instance (a real deployment), the per-event CPU column is the better guide: the delivered rate is bounded by roughly 1 / (CPU per event) per core.`
  )
  L.push(
    `- **Load client**: one child process (the approach of bench/client.mjs: raw \`node:net\` sockets reading into one shared buffer, the HTTP/1.1 head and the chunked encoding decoded by hand, events counted by the end-of-event marker \`</div>\\n\\n\` with \`Buffer#indexOf\`), holding all ${fmt(opt.clients)} sockets in two groups of ${fmt(opt.clients / 2)} (memory: both groups on the one instance; redis: group 0 on A, group 1 on B).`
  )
  L.push(
    `- **Payload**: bench/payload.mjs, a 3-line ~300-byte HTML fragment with a sequence number and \`process.hrtime.bigint()\` (CLOCK_MONOTONIC, comparable across processes) taken just before each publish; an unnamed (\`message\`) event.`
  )
  L.push(
    `- **Verification** (every kind, every round): a warm-up burst of ${opt.warmK} publishes; the first socket of each group (A and B for redis) is fed through \`eventsource-parser\`: every event must be a \`message\` whose data is exactly the published HTML, in sequence, with an id; both sockets must see the same ids (for redis: the Redis stream ids); every socket must get exactly the published count, in every measurement.`
  )
  L.push(
    `- **Throughput**: K = ${opt.k} awaited publishes in a burst (the publisher yields with \`setImmediate\` after each, as in bench/server.mjs), ${fmt(opt.clients * opt.k)} delivered events; delivered events/s = clients × K / (time from the first publish until the client has every event). Server CPU = \`process.cpuUsage()\` of the instances over the burst; Redis CPU from \`/proc/<pid>/stat\` of redis-server.`
  )
  L.push(
    `- **Latency**: ${opt.latRate} publishes/s for ${opt.latSeconds} s (after 1 s at the same rate, not counted), all ${fmt(opt.clients)} clients; for every event on every socket, receive time (hrtime at the read that completed the event) − the publish timestamp in the HTML; p50/p90/p99/max over all ${fmt(opt.clients * Math.round(opt.latRate * opt.latSeconds))} samples.`
  )
  L.push('')
  return L.join('\n')
}

function pkgVersion(name) {
  try {
    return JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version
  } catch {
    return '?'
  }
}

// ---------------------------------------------------------------- entry (after every declaration)

const role = process.argv[2] === '--child' ? process.argv[3] : 'parent'
if (role === 'server') await serverChild(process.argv[4], process.argv[5], process.argv[6])
else if (role === 'client') clientChild()
else await parent()
