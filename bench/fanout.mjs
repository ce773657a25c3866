#!/usr/bin/env node
// Fan-out benchmark: one publisher, N SSE subscribers, several server kinds
// compared in alternating rounds in the same run. See bench/README.md.
//
//   node bench/fanout.mjs [--quick] [--rounds 5] [--clients 100,1000,5000]
//        [--kinds raw,fastify-sse,better-sse,fastify-sse-v2,ours[,fastify-raw]]
//        [--events 100000] [--lat-clients 1000] [--lat-rate 20] [--lat-seconds 5]
//        [--max-foreign 0.15] [--max-slow 1.2] [--retries 2] [--quiet-wait 30]
//        [--quiet-budget 300] [--no-pin] [--no-write] [--out bench/RESULTS.md]
//
// The parent only orchestrates: every server kind runs in its own child
// process (bench/server.mjs, --expose-gc), the load generator in another
// (bench/client.mjs). Children talk to the parent over IPC; all network
// traffic is between the children on 127.0.0.1.

import { execFileSync, spawn } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const DEFAULT_KINDS = ['raw', 'fastify-sse', 'better-sse', 'fastify-sse-v2', 'ours']
const ALL_KINDS = [...DEFAULT_KINDS, 'fastify-raw'] // fastify-raw: opt-in (--kinds ...,fastify-raw)

// ---------------------------------------------------------------- options

function parseArgs(argv) {
  const o = {
    quick: false,
    rounds: 5,
    clients: [100, 1000, 5000],
    kinds: DEFAULT_KINDS.slice(),
    events: 100_000, // delivered events per timed burst (K = events / N, clamped)
    minK: 40,
    maxK: 3000,
    latClients: 1000,
    latRate: 20,
    latSeconds: 5,
    warmClients: 100,
    maxForeign: 0.15, // CPUs of load by other processes tolerated during a measurement
    maxSlow: 1.2, // tolerated server-CPU slowdown (speed probe) during a measurement
    retries: 2,
    quietWait: 30, // s to wait for a quiet machine before each timed measurement
    quietBudget: 300, // s of such waiting (and repeats) in the whole run, then measure regardless
    pin: true,
    write: true,
    out: path.join(HERE, 'RESULTS.md')
  }
  const set = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    const val = () => (inline !== undefined ? inline : argv[++i])
    switch (flag) {
      case '--quick':
        o.quick = true
        break
      case '--rounds':
        set.rounds = Number(val())
        break
      case '--clients':
        set.clients = val().split(',').map(Number)
        break
      case '--kinds':
        set.kinds = val().split(',')
        break
      case '--events':
        set.events = Number(val())
        break
      case '--lat-clients':
        set.latClients = Number(val())
        break
      case '--lat-rate':
        set.latRate = Number(val())
        break
      case '--lat-seconds':
        set.latSeconds = Number(val())
        break
      case '--no-pin':
        o.pin = false
        break
      case '--max-foreign':
        set.maxForeign = Number(val())
        break
      case '--max-slow':
        set.maxSlow = Number(val())
        break
      case '--retries':
        set.retries = Number(val())
        break
      case '--quiet-wait':
        set.quietWait = Number(val())
        break
      case '--quiet-budget':
        set.quietBudget = Number(val())
        break
      case '--no-write':
        o.write = false
        break
      case '--out':
        o.out = path.resolve(val())
        break
      case '-h':
      case '--help':
        console.log(
          readFileSync(fileURLToPath(import.meta.url), 'utf8')
            .split('\n')
            .slice(1, 10)
            .join('\n')
        )
        process.exit(0)
        break
      default:
        console.error(`unknown option ${a} (see --help)`)
        process.exit(2)
    }
  }
  if (o.quick) Object.assign(o, { rounds: 1, events: 50_000, latSeconds: 2, quietWait: 5, quietBudget: 30, retries: 1 })
  // env overrides (BENCH_ROUNDS=3 ...), then explicit flags win
  const env = process.env
  if (env.BENCH_ROUNDS) o.rounds = Number(env.BENCH_ROUNDS)
  if (env.BENCH_CLIENTS) o.clients = env.BENCH_CLIENTS.split(',').map(Number)
  if (env.BENCH_KINDS) o.kinds = env.BENCH_KINDS.split(',')
  Object.assign(o, set)
  for (const k of o.kinds) {
    if (!ALL_KINDS.includes(k)) {
      console.error(`unknown kind ${k}; known: ${ALL_KINDS.join(', ')}`)
      process.exit(2)
    }
  }
  if (!(o.rounds >= 1) || o.clients.some((n) => !(n >= 1))) {
    console.error('bad --rounds or --clients')
    process.exit(2)
  }
  o.clients.sort((a, b) => a - b)
  return o
}

const opt = parseArgs(process.argv.slice(2))
const kForN = (n) => Math.max(opt.minK, Math.min(opt.maxK, Math.round(opt.events / n)))

// ---------------------------------------------------------------- machine

function machine() {
  let model = 'unknown'
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))
    if (m) model = m[1].trim()
  } catch {}
  let nofile = { soft: null, hard: null }
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    if (m) nofile = { soft: m[1], hard: m[2] }
  } catch {}
  return {
    nproc: os.availableParallelism(),
    model,
    node: process.version,
    os: `${os.type()} ${os.release()}`,
    memGiB: (os.totalmem() / 2 ** 30).toFixed(1),
    nofile
  }
}

const mach = machine()
const maxConns = Math.max(...opt.clients, opt.latClients, opt.warmClients)
const needFds = 2 * maxConns + 200 // the client holds the reference's and the kind's sockets at once
let nofileTarget = null
{
  const soft = mach.nofile.soft === 'unlimited' ? Infinity : Number(mach.nofile.soft)
  const hard = mach.nofile.hard === 'unlimited' ? Infinity : Number(mach.nofile.hard)
  if (soft < needFds) {
    if (hard < needFds) {
      console.error(
        `ulimit -n is ${soft} (hard ${hard}), but N=${maxConns} needs ~${needFds} descriptors in the load client ` +
          `(it holds the raw reference's and the measured kind's connections at once).\n` +
          `The hard limit can only be raised by root (e.g. \`ulimit -Hn 65536\` in a root shell or /etc/security/limits.conf).`
      )
      process.exit(2)
    }
    nofileTarget = hard === Infinity ? needFds : hard // children raise their soft limit up to this
  }
}

let canPin = false
if (opt.pin && mach.nproc >= 2) {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' })
    execFileSync('taskset', ['-c', '1', 'true'], { stdio: 'ignore' })
    canPin = true
  } catch {}
}

// ---------------------------------------------------------------- children

class Child {
  constructor(name, script, args, { cpu, execArgv = [] }) {
    this.name = name
    this.pending = new Map()
    this.waiters = new Map()
    this.nextId = 1
    this.exited = false
    const pre = []
    if (nofileTarget !== null) pre.push(`ulimit -n ${nofileTarget} || exit 111`)
    const pin = canPin && cpu !== undefined ? `taskset -c ${cpu} ` : ''
    // sh only raises the soft fd limit / sets the CPU affinity, then execs node (keeps the IPC fd)
    const line = `${pre.join('; ')}${pre.length ? '; ' : ''}exec ${pin}"$0" "$@"`
    this.proc = spawn('sh', ['-c', line, process.execPath, ...execArgv, path.join(HERE, script), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    })
    this.proc.on('message', (m) => this.onMessage(m))
    this.proc.on('exit', (code, signal) => {
      this.exited = true
      const err = new Error(`${this.name} exited (code ${code}, signal ${signal})`)
      for (const { reject } of this.pending.values()) reject(err)
      this.pending.clear()
      for (const list of this.waiters.values()) for (const { reject } of list) reject(err)
      this.waiters.clear()
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
    const list = this.waiters.get(m.type)
    if (list?.length) {
      const w = list.shift()
      clearTimeout(w.timer)
      w.resolve(m)
    } else {
      ;(this.early ??= []).push(m)
    }
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

  /** Forget buffered unsolicited messages of `type` (e.g. a late 'done' of an abandoned measurement). */
  drop(type) {
    if (this.early) this.early = this.early.filter((m) => m.type !== type)
  }

  /** Next unsolicited message of `type` (buffered if it already arrived). */
  waitFor(type, timeoutMs) {
    const i = this.early ? this.early.findIndex((m) => m.type === type) : -1
    if (i >= 0) return Promise.resolve(this.early.splice(i, 1)[0])
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited`))
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null }
      entry.timer = setTimeout(() => {
        const list = this.waiters.get(type)
        const at = list ? list.indexOf(entry) : -1
        if (at >= 0) list.splice(at, 1)
        reject(new TimeoutError(`${this.name}: no '${type}' within ${timeoutMs} ms`))
      }, timeoutMs)
      if (!this.waiters.has(type)) this.waiters.set(type, [])
      this.waiters.get(type).push(entry)
    })
  }

  async stop() {
    if (this.exited) return
    const gone = new Promise((resolve) => this.proc.once('exit', resolve))
    try {
      await this.rpc('exit', {}, 2000)
    } catch {}
    const t = setTimeout(() => {
      if (!this.exited) this.proc.kill('SIGKILL') // our own child, by its handle
    }, 3000)
    await gone
    clearTimeout(t)
  }
}

// ---------------------------------------------------------------- foreign CPU load
// Other processes on the machine (tests, builds, ...) distort a 2-core run.
// /proc/stat user+nice+system over the measured interval, minus the CPU time
// of the server, the client and this parent, is the CPU other processes used.
// (irq/softirq time is left out on both sides.)
const CLK_TCK = 100
function sysSnap() {
  let busy = null
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number)
    busy = ((f[0] + f[1] + f[2]) * 1000) / CLK_TCK // ms
  } catch {}
  const c = process.cpuUsage()
  return { busy, self: (c.user + c.system) / 1000, t: performance.now() }
}
/** CPUs' worth of load from other processes between two snapshots (0.25 = a quarter of one CPU). */
function foreignLoad(a, b, childMs) {
  if (a.busy == null || b.busy == null) return 0
  const wall = b.t - a.t
  const other = b.busy - a.busy - (b.self - a.self) - childMs
  return Math.max(0, other / wall)
}

// ---------------------------------------------------------------- CPU speed
// The same fixed integer loop, timed in the server child (CPU 0) and in the
// client (CPU 1) right before and after every timed measurement. Relative to
// the fastest time seen in the run it tells whether the vCPU was running slow
// (busy host, SMT sibling), which no process on this machine can see.
const fastest = { server: Infinity, client: Infinity }
async function probe(ctx) {
  const [a, b] = await Promise.all([ctx.server.rpc('calib'), ctx.client.rpc('calib')])
  fastest.server = Math.min(fastest.server, a.ns)
  fastest.client = Math.min(fastest.client, b.ns)
  return { server: a.ns, client: b.ns }
}
function slowness(p0, p1) {
  return {
    slow: Math.max(p0.server, p1.server) / fastest.server,
    clientSlow: Math.max(p0.client, p1.client) / fastest.client
  }
}

class TimeoutError extends Error {}
class BenchFailure extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// extra node flags for the children, e.g. BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof"
const extraArgs = (name) => (process.env[name] ? process.env[name].split(/\s+/).filter(Boolean) : [])

async function startServer(kind) {
  const s = new Child(`server:${kind}`, 'server.mjs', [kind], {
    cpu: 0,
    execArgv: ['--expose-gc', ...extraArgs('BENCH_SERVER_NODE_ARGS')]
  })
  const first = await Promise.race([s.waitFor('ready', 30_000), s.waitFor('failed', 30_000)])
  if (first.type === 'failed') {
    await s.stop()
    throw new BenchFailure(`${kind} server failed to start: ${first.error.split('\n')[0]}`)
  }
  s.port = first.port
  return s
}

async function startClient() {
  const c = new Child('client', 'client.mjs', [], { cpu: 1, execArgv: extraArgs('BENCH_CLIENT_NODE_ARGS') })
  await c.waitFor('ready', 30_000)
  return c
}

// ---------------------------------------------------------------- steps

async function until(fn, timeoutMs, what) {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) throw new BenchFailure(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

/** Bring the client to exactly n open sockets and wait until the server counts n subscribers. */
async function connectN(ctx, n) {
  const r = await ctx.client.rpc('connect', { group: ctx.group, port: ctx.server.port, n }, 120_000)
  if (r.problems.length) throw new BenchFailure(`connect: ${r.problems.slice(0, 3).join('; ')}`)
  let last = -1
  await until(
    async () => {
      last = (await ctx.server.rpc('count')).count
      return last === n
    },
    60_000,
    `server to count ${n} connections (it counts ${last})`
  )
  // The response head should normally be on the wire before the first event.
  const ok = await (async () => {
    const end = Date.now() + 2000
    while (Date.now() < end) {
      const st = await ctx.client.rpc('status', { group: ctx.group })
      if (st.headersOk === n) return true
      await sleep(20)
    }
    return false
  })()
  if (!ok && !ctx.notes.has('head')) {
    ctx.notes.add('head')
    ctx.note(`response head not received on connect (first bytes arrive with the first event)`)
  }
}

/** One burst of k awaited publishes; returns the measurements. Throws BenchFailure on lost/bad events. */
async function burst(ctx, n, k, { verify = false } = {}) {
  const seq0 = ctx.seq
  ctx.seq += k
  const p0 = verify ? null : await probe(ctx)
  ctx.client.drop('done')
  await ctx.client.rpc('arm', { group: ctx.group, k, mode: 'count', verify, seq0 })
  const timeoutMs = 20_000 + Math.round((n * k) / 10)
  const doneP = ctx.client.waitFor('done', timeoutMs)
  doneP.catch(() => {})
  const snap0 = sysSnap()
  const sent = await ctx.server.rpc('burst', { k, seq0 }, timeoutMs)
  let done
  try {
    done = await doneP
  } catch (err) {
    if (!(err instanceof TimeoutError)) throw err
    const st = await ctx.client.rpc('disarm')
    throw new BenchFailure(
      `burst N=${n} K=${k}: client got ${st.total} of ${st.target} events in ${timeoutMs} ms ` +
        `(per socket min ${st.min}, max ${st.max})${st.problems.length ? `; ${st.problems.slice(0, 3).join('; ')}` : ''}`
    )
  }
  const cpu = (await ctx.server.rpc('burstCpu')).cpu
  const foreign = foreignLoad(snap0, sysSnap(), cpu.user + cpu.system + done.cpuMs)
  checkDone(done, n, k, `burst N=${n} K=${k}`)
  const speed = verify ? { slow: 1, clientSlow: 1 } : slowness(p0, await probe(ctx))
  const seconds = (done.t - sent.t0) / 1e9
  return {
    eventsPerSec: (n * k) / seconds,
    seconds,
    sendSeconds: sent.sendNs / 1e9,
    serverCpuMs: cpu.user + cpu.system,
    serverSysShare: cpu.system / (cpu.user + cpu.system),
    serverCpuPer1k: (cpu.user + cpu.system) / ((n * k) / 1000),
    clientCpuMs: done.cpuMs,
    clientSysShare: done.sysMs / done.cpuMs,
    clientBusy: done.cpuMs / 1000 / seconds,
    foreign,
    ...speed,
    verify: done.verify
  }
}

function checkDone(done, _n, k, what) {
  const bad = []
  if (done.min !== k || done.max !== k) bad.push(`per-socket events min ${done.min} max ${done.max}, expected ${k}`)
  if (done.problems.length) bad.push(done.problems.slice(0, 3).join('; '))
  if (done.verify?.errors.length) bad.push(`VERIFY (eventsource-parser on socket 0): ${done.verify.errors.join(' | ')}`)
  if (bad.length) throw new BenchFailure(`${what}: ${bad.join('; ')}`)
}

async function latencyRun(ctx, n, rate, seconds, { warm = false } = {}) {
  const count = Math.max(1, Math.round(rate * seconds))
  const seq0 = ctx.seq
  ctx.seq += count
  const p0 = await probe(ctx)
  ctx.client.drop('done')
  await ctx.client.rpc('arm', {
    group: ctx.group,
    k: count,
    mode: warm ? 'count' : 'latency',
    verify: warm,
    seq0,
    latCapacity: n * count
  })
  const timeoutMs = Math.round(seconds * 1000) + 30_000
  const doneP = ctx.client.waitFor('done', timeoutMs)
  doneP.catch(() => {})
  const snap0 = sysSnap()
  const paced = await ctx.server.rpc('paced', { rate, count, seq0 }, timeoutMs)
  let done
  try {
    done = await doneP
  } catch (err) {
    if (!(err instanceof TimeoutError)) throw err
    const st = await ctx.client.rpc('disarm')
    throw new BenchFailure(`latency N=${n}: client got ${st.total} of ${st.target} events`)
  }
  const foreign = foreignLoad(snap0, sysSnap(), paced.cpu.user + paced.cpu.system + done.cpuMs)
  checkDone(done, n, count, `latency N=${n}`)
  const speed = slowness(p0, await probe(ctx))
  return { ...done.latency, ...speed, late: paced.late, foreign, clientBusy: done.cpuMs / (done.wallNs / 1e6) }
}

let quietSpent = 0 // ms spent waiting for quiet / repeating noisy measurements
const budgetLeft = () => quietSpent < opt.quietBudget * 1000

/** Wait (at most opt.quietWait s) for a 300 ms window in which other processes used ≤ opt.maxForeign CPUs. */
async function waitQuiet(what) {
  const t0 = Date.now()
  const end = t0 + opt.quietWait * 1000
  let waited = false
  for (;;) {
    const a = sysSnap()
    await sleep(300)
    const f = foreignLoad(a, sysSnap(), 0) // our children are idle here
    if (f <= opt.maxForeign || Date.now() > end || !budgetLeft()) break
    if (!waited) log(`        ${what}: waiting for other processes to go quiet (${f.toFixed(2)} CPU busy)`)
    waited = true
    quietSpent += 300
  }
}

/** How disturbed a measurement was: ≤ 1 is clean. */
const disturbance = (r) => Math.max(r.foreign / opt.maxForeign, (r.slow - 1) / (opt.maxSlow - 1))

/**
 * Repeat a measurement while other processes used more than opt.maxForeign
 * CPUs or the server's CPU ran more than opt.maxSlow times slower than its
 * best; keep the least disturbed try.
 */
async function quiet(ctx, what, fn) {
  let best = null
  for (let attempt = 0; ; attempt++) {
    await waitQuiet(what)
    const t0 = Date.now()
    const r = await fn()
    if (best === null || disturbance(r) < disturbance(best)) best = r
    if (disturbance(r) <= 1) break
    const again = attempt < opt.retries && budgetLeft()
    const why = []
    if (r.foreign > opt.maxForeign) why.push(`other processes used ${r.foreign.toFixed(2)} CPU`)
    if (r.slow > opt.maxSlow) why.push(`server CPU ran ${r.slow.toFixed(2)}× slower than its best`)
    log(`        ${what}: ${why.join(', ')} during the measurement${again ? ', repeating' : ''}`)
    if (!again) break
    ctx.repeats = (ctx.repeats ?? 0) + 1
    quietSpent += Date.now() - t0
  }
  ctx.foreign = Math.max(ctx.foreign ?? 0, best.foreign)
  ctx.slow = Math.max(ctx.slow ?? 0, best.slow)
  return best
}

// ---------------------------------------------------------------- results

const res = {}
for (const k of opt.kinds) {
  res[k] = {
    tput: {},
    cpu: {},
    clientBusy: {},
    lag: {},
    heap: {},
    rss: {},
    p50: [],
    p99: [],
    foreign: [],
    slow: [],
    repeats: 0,
    errors: [],
    notes: [],
    verified: 0,
    ran: 0,
    skipped: null
  }
}
const perRound = [] // [{round, kind, metric, n, value}]
const pairs = {} // pairs[kind][metric][n] = [kind value / raw value of a back-to-back pair]

function putPair(kind, metric, n, value, rawValue) {
  const m = ((pairs[kind] ??= {})[metric] ??= {})
  ;(m[n] ??= []).push(value / rawValue)
}

function put(kind, metric, n, round, value) {
  const m = res[kind][metric]
  if (Array.isArray(m)) m.push({ round, value })
  else (m[n] ??= []).push({ round, value })
  perRound.push({ round, kind, metric, n, value })
}

function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (!v.length) return null
  const h = v.length >> 1
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2
}

/**
 * Ratio to raw: the median of the back-to-back pair ratios when there are
 * pairs (throughput, CPU, latency), else the median over rounds of
 * value(kind) / value(raw) from the same round (memory).
 */
function ratio(kind, metric, n) {
  const p = pairs[kind]?.[metric]?.[n]
  if (p?.length) return median(p)
  const pick = (k) => {
    const m = res[k]?.[metric]
    return Array.isArray(m) ? m : (m?.[n] ?? [])
  }
  const raw = new Map(pick('raw').map((e) => [e.round, e.value]))
  if (kind === 'raw') return null
  return median(
    pick(kind)
      .filter((e) => raw.has(e.round))
      .map((e) => e.value / raw.get(e.round))
  )
}

/** All single ratios behind ratio(): per pair, else per round. */
function ratios(kind, metric, n) {
  const p = pairs[kind]?.[metric]?.[n]
  if (p?.length) return p.filter(Number.isFinite)
  const pick = (k) => {
    const m = res[k]?.[metric]
    return Array.isArray(m) ? m : (m?.[n] ?? [])
  }
  const raw = new Map(pick('raw').map((e) => [e.round, e.value]))
  if (kind === 'raw') return []
  return pick(kind)
    .filter((e) => raw.has(e.round))
    .map((e) => e.value / raw.get(e.round))
    .filter(Number.isFinite)
}

function med(kind, metric, n) {
  const m = res[kind][metric]
  return median((Array.isArray(m) ? m : (m[n] ?? [])).map((e) => e.value))
}

// ---------------------------------------------------------------- run

const log = (...a) => console.log(...a)
const started = Date.now()
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0)}s`.padStart(5)

function logBurst(t, round, n, k, b) {
  log(
    `${elapsed()} r${round} ${t.kind.padEnd(14)} N=${String(n).padStart(5)} K=${String(k).padStart(4)}: ` +
      `${fmtInt(b.eventsPerSec).padStart(9)} ev/s, server ${b.serverCpuPer1k.toFixed(2)} ms CPU/1k ev ` +
      `(${(b.serverSysShare * 100).toFixed(0)}% sys), ` +
      `publish loop ${b.sendSeconds.toFixed(2)}s of ${b.seconds.toFixed(2)}s, client busy ${(b.clientBusy * 100).toFixed(0)}%` +
      (b.foreign > 0.05 ? `, other load ${b.foreign.toFixed(2)} CPU` : '') +
      (b.slow > 1.1 ? `, server CPU ${b.slow.toFixed(2)}× slow` : '') +
      (b.clientSlow > 1.1 ? `, client CPU ${b.clientSlow.toFixed(2)}× slow` : '')
  )
}

function logLatency(t, round, l) {
  log(
    `${elapsed()} r${round} ${t.kind.padEnd(14)} latency N=${opt.latClients} @${opt.latRate}/s: ` +
      `p50 ${fmtMs(l.p50)} p99 ${fmtMs(l.p99)} max ${fmtMs(l.max)} (${l.n} samples${l.late ? `, ${l.late} publishes late` : ''})`
  )
}

function putBurst(kind, round, n, b) {
  put(kind, 'tput', n, round, b.eventsPerSec)
  put(kind, 'cpu', n, round, b.serverCpuPer1k)
  put(kind, 'clientBusy', n, round, b.clientBusy)
  put(kind, 'lag', n, round, Math.max(0, (b.seconds - b.sendSeconds) / b.seconds))
}

/** A server under test, with its own connection group in the shared load client. */
async function openTarget(kind, group, client) {
  const t = { kind, group, client, seq: 1, notes: new Set(), note: (x) => res[kind].notes.push(x) }
  t.server = await startServer(kind)
  return t
}

async function closeTarget(t) {
  try {
    await t.client.rpc('connect', { group: t.group, port: t.server.port, n: 0 }) // before the server goes away
  } catch {}
  await t.server.stop()
}

/** Warm-up with verification, then idle memory per connection. */
async function prepare(t, round) {
  const kind = t.kind
  // warm-up: JIT the publish path, and verify the bytes with eventsource-parser
  await connectN(t, opt.warmClients)
  for (let i = 0; i < 2; i++) {
    const b = await burst(t, opt.warmClients, 300, { verify: true })
    res[kind].verified += b.verify.events
  }
  // memory per idle connection: gc'd heap / RSS with N idle subscribers vs none
  await connectN(t, 0)
  await sleep(200)
  const m0 = await t.server.rpc('mem')
  for (const n of opt.clients) {
    await connectN(t, n)
    await sleep(300)
    const m = await t.server.rpc('mem')
    put(kind, 'heap', n, round, (m.heapUsed - m0.heapUsed) / n)
    put(kind, 'rss', n, round, (m.rss - m0.rss) / n)
  }
  const maxN = opt.clients[opt.clients.length - 1]
  log(
    `${elapsed()} r${round} ${kind.padEnd(14)} idle memory at N=${maxN}: heap ${fmtInt(res[kind].heap[maxN].at(-1).value)} B/conn, ` +
      `RSS ${fmtInt(res[kind].rss[maxN].at(-1).value)} B/conn`
  )
}

/**
 * Throughput, CPU and latency of `t`. With a reference `ref` (the raw server,
 * connected with the same N), every timed measurement of `t` is paired with
 * one of `ref` right before or after it (alternating), so both see the same
 * machine state; ratios are taken per pair.
 */
async function measure(t, ref, round, slot) {
  const kind = t.kind
  const ctx = { foreign: 0, slow: 0, repeats: 0 }
  const both = async (fn, order) => {
    const first = ref && order ? await fn(ref) : null
    const mine = await fn(t)
    const other = ref && !order ? await fn(ref) : first
    return {
      mine,
      other,
      foreign: Math.max(mine.foreign, other?.foreign ?? 0),
      slow: Math.max(mine.slow, other?.slow ?? 0)
    }
  }
  let flip = (round + slot) % 2 === 0
  // throughput + CPU per event, largest N first (closing sockets is cheap)
  for (const n of [...opt.clients].reverse()) {
    await connectN(t, n)
    if (ref) await connectN(ref, n)
    const k = kForN(n)
    const kWarm = Math.max(10, Math.round(k / 8))
    res[kind].verified += (await burst(t, n, kWarm, { verify: true })).verify.events
    if (ref) res.raw.verified += (await burst(ref, n, kWarm, { verify: true })).verify.events
    flip = !flip
    const r = await quiet(ctx, `${kind} N=${n}`, () => both((x) => burst(x, n, k), flip))
    putBurst(kind, round, n, r.mine)
    if (ref) {
      putBurst('raw', round, n, r.other)
      putPair(kind, 'tput', n, r.mine.eventsPerSec, r.other.eventsPerSec)
      putPair(kind, 'cpu', n, r.mine.serverCpuPer1k, r.other.serverCpuPer1k)
    }
    for (const [x, b] of flip && ref
      ? [
          [ref, r.other],
          [t, r.mine]
        ]
      : [[t, r.mine], ...(ref ? [[ref, r.other]] : [])]) {
      logBurst(x, round, n, k, b)
    }
  }
  // publish-to-receive latency at a steady rate
  await connectN(t, opt.latClients)
  if (ref) await connectN(ref, opt.latClients)
  await latencyRun(t, opt.latClients, opt.latRate, 0.5, { warm: true })
  if (ref) await latencyRun(ref, opt.latClients, opt.latRate, 0.5, { warm: true })
  flip = !flip
  const r = await quiet(ctx, `${kind} latency`, () =>
    both((x) => latencyRun(x, opt.latClients, opt.latRate, opt.latSeconds), flip)
  )
  put(kind, 'p50', null, round, r.mine.p50)
  put(kind, 'p99', null, round, r.mine.p99)
  if (ref) {
    put('raw', 'p50', null, round, r.other.p50)
    put('raw', 'p99', null, round, r.other.p99)
    putPair(kind, 'p50', null, r.mine.p50, r.other.p50)
    putPair(kind, 'p99', null, r.mine.p99, r.other.p99)
    if (flip) logLatency(ref, round, r.other)
  }
  logLatency(t, round, r.mine)
  if (ref && !flip) logLatency(ref, round, r.other)
  for (const k of ref ? [kind, 'raw'] : [kind]) {
    put(k, 'foreign', null, round, ctx.foreign)
    put(k, 'slow', null, round, ctx.slow)
  }
  res[kind].repeats += ctx.repeats
}

/**
 * One round: a fresh load client and a fresh `raw` reference server; then
 * every other kind in a rotating order, each in a fresh server process,
 * measured next to the reference.
 */
async function runRound(round, kinds) {
  const others = kinds.filter((k) => k !== 'raw')
  const order = others.map((_, i) => others[(i + round - 1) % others.length])
  const client = await startClient()
  let ref = null
  try {
    if (kinds.includes('raw')) {
      try {
        ref = await openTarget('raw', 'ref', client)
        await prepare(ref, round)
        if (!others.length) await measure(ref, null, round, 0)
        res.raw.ran++
      } catch (err) {
        fail('raw', round, err)
        if (ref) await ref.server.stop()
        ref = null
      }
    }
    for (const [slot, kind] of order.entries()) {
      let t = null
      try {
        t = await openTarget(kind, 'kind', client)
        await prepare(t, round)
        await measure(t, ref, round, slot)
        res[kind].ran++
      } catch (err) {
        fail(kind, round, err)
      } finally {
        if (t) await closeTarget(t)
      }
    }
  } finally {
    if (ref) await ref.server.stop()
    await client.stop()
  }
}

function fail(kind, round, err) {
  const text = err instanceof BenchFailure ? err.message : String(err?.stack ?? err)
  res[kind].errors.push(`round ${round}: ${text}`)
  log(`\n!!!!! ${kind} FAILED in round ${round}: ${text}\n`)
}

const fmtInt = (x) => (x == null ? '—' : Math.round(x).toLocaleString('en-US'))
const fmtMs = (us) => (us == null ? '—' : `${(us / 1000).toFixed(2)} ms`)
const fmtX = (r) => (r == null ? '' : ` (${r.toFixed(2)}×)`)

/** Learn both cores' best speed-probe time before measuring anything. */
async function initialSpeed() {
  const ctx = {}
  ctx.server = await startServer('raw')
  ctx.client = await startClient()
  try {
    for (let i = 0; i < 12; i++) {
      await probe(ctx)
      await sleep(100)
    }
  } finally {
    await Promise.all([ctx.server.stop(), ctx.client.stop()])
  }
  log(
    `speed probe: best ${(fastest.server / 1e6).toFixed(2)} ms on the server CPU, ${(fastest.client / 1e6).toFixed(2)} ms on the client CPU`
  )
}

let oursSnapshot = null
let oursBuild = null

function describeBuild(dir) {
  const git = (...a) => {
    try {
      return execFileSync('git', a, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    } catch {
      return ''
    }
  }
  const head = git('rev-parse', '--short', 'HEAD') || 'unknown commit'
  const dirty = git('status', '--porcelain', '--', 'lib') ? ' + uncommitted changes in lib/' : ''
  const when = statSync(path.join(ROOT, dir, 'index.js')).mtime.toISOString()
  return `${dir}/index.js built ${when}, git ${head}${dirty}`
}

function removeSnapshot() {
  if (oursSnapshot) rmSync(oursSnapshot, { recursive: true, force: true })
  oursSnapshot = null
}

async function main() {
  log(`fan-out benchmark: kinds ${opt.kinds.join(', ')}; clients ${opt.clients.join(', ')}; rounds ${opt.rounds}`)
  log(
    `machine: ${mach.nproc} CPU (${mach.model}), node ${mach.node}, ulimit -n ${mach.nofile.soft}/${mach.nofile.hard}` +
      `${canPin ? ', server pinned to CPU 0 and client to CPU 1' : ', no CPU pinning'}`
  )
  if (opt.kinds.includes('ours')) {
    const built = ['dist/lib', 'dist'].find((d) => existsSync(path.join(ROOT, d, 'index.js')))
    if (!built) {
      const why = 'the plugin is not built yet (no dist/lib/index.js; run `npm run build`)'
      log(`NOTE: skipping kind "ours": ${why}`)
      res.ours.skipped = why
    } else {
      // Snapshot the build so a rebuild during the run cannot change (or half-write) what is measured.
      // It stays inside bench/ so the plugin's bare imports still resolve from the project's node_modules.
      oursSnapshot = mkdtempSync(path.join(HERE, '.ours-build-'))
      cpSync(path.join(ROOT, built), oursSnapshot, { recursive: true })
      process.env.BENCH_OURS_ENTRY = path.join(oursSnapshot, 'index.js')
      oursBuild = describeBuild(built)
      log(`ours: ${oursBuild}`)
    }
  }
  const kinds = opt.kinds.filter((k) => !res[k].skipped)
  await initialSpeed()
  for (let round = 1; round <= opt.rounds; round++) await runRound(round, kinds)
  const report = renderReport()
  log(`\n${report}`)
  if (opt.write) {
    writeFileSync(opt.out, report)
    log(`written to ${path.relative(process.cwd(), opt.out) || opt.out}`)
  }
  const failed = opt.kinds.some((k) => res[k].errors.length)
  process.exitCode = failed ? 1 : 0
}

function renderReport() {
  const kinds = opt.kinds
  const Ns = opt.clients
  const maxN = Ns[Ns.length - 1]
  const L = []
  const cmd = `node bench/fanout.mjs${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`
  L.push('# Fan-out benchmark results', '')
  L.push(`- date: ${new Date().toISOString()}`)
  L.push(`- command: \`${cmd}\` (took ${((Date.now() - started) / 60000).toFixed(1)} min)`)
  L.push(`- machine: ${mach.nproc} CPUs (nproc), ${mach.model}, ${mach.memGiB} GiB RAM, ${mach.os}`)
  L.push(`- node: ${mach.node}; ulimit -n ${mach.nofile.soft} (hard ${mach.nofile.hard})`)
  L.push(
    `- rounds: ${opt.rounds}; in every round each kind runs in a fresh server process (rotating order) and each of its timed ` +
      'measurements is paired with one of a `raw` reference server measured right before or after it (alternating); values are ' +
      'medians over rounds (for `raw`: over all its reference measurements), ratios (×) are medians of the per-pair ratios ' +
      '(memory: of the per-round ratios)'
  )
  L.push(
    `- burst size K per socket: ${Ns.map((n) => `N=${n}: ${kForN(n)}`).join(', ')} ` +
      `(≈${fmtInt(opt.events)} delivered events per timed burst)`
  )
  if (oursBuild) L.push(`- ours: ${oursBuild} (copied at the start of the run)`)
  L.push(`- CPU pinning: ${canPin ? 'server child on CPU 0, load client on CPU 1 (taskset)' : 'none'}`)
  L.push('')

  const cell = (kind, metric, n, fmt, showRatio = kind !== 'raw') => {
    if (res[kind].skipped) return 'skipped'
    const v = med(kind, metric, n)
    if (v == null) return res[kind].errors.length ? 'FAIL' : '—'
    return fmt(v) + (showRatio ? fmtX(ratio(kind, metric, n)) : '')
  }

  L.push('## Delivered events/s (higher is better)', '')
  L.push(`| kind | ${Ns.map((n) => `N=${fmtInt(n)}`).join(' | ')} |`)
  L.push(`|---|${Ns.map(() => '---:').join('|')}|`)
  for (const k of kinds) L.push(`| ${k} | ${Ns.map((n) => cell(k, 'tput', n, fmtInt)).join(' | ')} |`)
  L.push('')

  L.push('## Server CPU ms per 1,000 delivered events (lower is better)', '')
  L.push(`| kind | ${Ns.map((n) => `N=${fmtInt(n)}`).join(' | ')} |`)
  L.push(`|---|${Ns.map(() => '---:').join('|')}|`)
  for (const k of kinds) L.push(`| ${k} | ${Ns.map((n) => cell(k, 'cpu', n, (v) => v.toFixed(3))).join(' | ')} |`)
  L.push('')

  L.push(
    `## Publish-to-receive latency, ${fmtInt(opt.latClients)} clients × ${opt.latRate} msg/s for ${opt.latSeconds} s (lower is better)`,
    ''
  )
  L.push('| kind | p50 | p99 |')
  L.push('|---|---:|---:|')
  for (const k of kinds) {
    L.push(`| ${k} | ${cell(k, 'p50', null, fmtMs)} | ${cell(k, 'p99', null, fmtMs)} |`)
  }
  L.push('')

  L.push('## Memory per idle connection (server, after gc; lower is better)', '')
  L.push(`| kind | ${Ns.map((n) => `heap B/conn N=${fmtInt(n)}`).join(' | ')} | RSS B/conn N=${fmtInt(maxN)} |`)
  L.push(`|---|${Ns.map(() => '---:').join('|')}|---:|`)
  for (const k of kinds) {
    L.push(`| ${k} | ${Ns.map((n) => cell(k, 'heap', n, fmtInt)).join(' | ')} | ${cell(k, 'rss', maxN, fmtInt)} |`)
  }
  L.push('')

  L.push('## Is the load client keeping up? (timed bursts)', '')
  L.push(
    "`busy` = load-client CPU time / burst wall time; `lag` = share of the burst wall time after the server's publish loop had " +
      'finished, i.e. spent only waiting for delivery. A client that could not keep up would show a large lag (events piling up in ' +
      'socket buffers); a busy client with ~0% lag is just reading every event as soon as it arrives. ' +
      '`other` = the most CPU that other processes on the machine used during any kept measurement of that kind (in CPUs); ' +
      '`slow` = the worst server-CPU slowdown seen by the speed probe around a kept measurement (1.00 = as fast as the best probe ' +
      `of the run); \`repeats\` = measurements of that kind that were repeated because they exceeded ${opt.maxForeign} CPU of other ` +
      `load or a ${opt.maxSlow}× slowdown (up to ${opt.retries} repeats each, ${opt.quietBudget} s budget per run).`,
    ''
  )
  L.push(`| kind | ${Ns.map((n) => `busy / lag N=${fmtInt(n)}`).join(' | ')} | other | slow | repeats |`)
  L.push(`|---|${Ns.map(() => '---:').join('|')}|---:|---:|---:|`)
  const pct = (v) => `${(v * 100).toFixed(0)}%`
  const worst = (list) => (list.length ? Math.max(...list.map((e) => e.value)).toFixed(2) : '—')
  for (const k of kinds) {
    const cells = Ns.map((n) => {
      const b = med(k, 'clientBusy', n)
      const g = med(k, 'lag', n)
      return b == null ? (res[k].skipped ? 'skipped' : '—') : `${pct(b)} / ${pct(g)}`
    })
    L.push(`| ${k} | ${cells.join(' | ')} | ${worst(res[k].foreign)} | ${worst(res[k].slow)} | ${res[k].repeats} |`)
  }
  L.push('')

  if (kinds.includes('ours') && !res.ours.skipped && kinds.includes('raw')) {
    L.push('## Targets for `ours` (ratios to `raw`, same run)', '')
    L.push(
      '`measured` is the median of the per-pair ratios (memory: per-round ratios), the figure the targets are judged on; ' +
        '`range` is the lowest and highest single ratio, to show the spread.',
      ''
    )
    L.push('| target | measured | | range |')
    L.push('|---|---:|---|---:|')
    const t = (label, metric, n, ok) => {
      const r = ratio('ours', metric, n)
      const all = ratios('ours', metric, n)
      const range = all.length ? `${Math.min(...all).toFixed(2)}–${Math.max(...all).toFixed(2)}×` : '—'
      L.push(
        `| ${label} | ${r == null ? '—' : `${r.toFixed(2)}×`} | ${r == null ? '' : ok(r) ? 'met' : '**not met**'} | ${range} |`
      )
    }
    if (Ns.includes(1000)) t('events/s at 1,000 clients ≥ 0.90×', 'tput', 1000, (r) => r >= 0.9)
    if (Ns.includes(5000)) t('events/s at 5,000 clients ≥ 0.85×', 'tput', 5000, (r) => r >= 0.85)
    for (const n of Ns) t(`server CPU per event at ${fmtInt(n)} clients ≤ 1.10×`, 'cpu', n, (r) => r <= 1.1)
    t('p99 latency ≤ 1.15×', 'p99', null, (r) => r <= 1.15)
    t(`heap per idle connection (N=${fmtInt(maxN)}) ≤ 1.20×`, 'heap', maxN, (r) => r <= 1.2)
    L.push('')
  }

  const notes = []
  for (const k of kinds) {
    if (res[k].skipped) notes.push(`- **${k}**: skipped: ${res[k].skipped}`)
    for (const e of res[k].errors) notes.push(`- **${k} FAILED** ${e}`)
    for (const n of new Set(res[k].notes)) notes.push(`- ${k}: ${n}`)
    if (!res[k].skipped) {
      notes.push(
        `- ${k}: ${fmtInt(res[k].verified)} events checked byte-for-byte with eventsource-parser ` +
          `(${res[k].ran}/${opt.rounds} rounds completed)`
      )
    }
  }
  L.push('## Checks and notes', '', ...notes, '')

  L.push('## Method', '')
  L.push(
    '- Every server kind runs in its own child process (`bench/server.mjs <kind>`, `--expose-gc`), freshly started for every kind in every round; ' +
      'the load client is one more child (`bench/client.mjs`). Servers are pinned to CPU 0 and the client to CPU 1 when possible. ' +
      'A `raw` reference server lives through each round with its own set of client connections; every timed measurement of a kind ' +
      '(burst or latency run) is done back to back with the same measurement on the reference, so slow phases of the VM hit both.',
    '- Kinds: `raw` = node:http writing one pre-built Buffer per publish to every response (the upper limit); ' +
      '`fastify-sse` = Fastify 5 + @fastify/sse, `reply.sse.send(html)` on every kept-alive reply; ' +
      '`better-sse` = Fastify 5 route with `reply.hijack()`, better-sse `createSession(request.raw, reply.raw)` registered on one `createChannel()`, `channel.broadcast(html)`; ' +
      '`fastify-sse-v2` = Fastify 5 + fastify-sse-v2, `reply.sse({ data: html })` on every reply (its per-reply pushable source); ' +
      "`ours` = Fastify 5 + this plugin from `dist/`, `reply.sse({ topics: ['bench'] })` and `app.sse.publish('bench', html)`. " +
      'Heartbeats are off everywhere.',
    '- Payload: a 3-line, ~300-byte HTML fragment (`bench/payload.mjs`) sent as an unnamed (`message`) event, one `data:` line per HTML line; ' +
      'it embeds a sequence number and `process.hrtime.bigint()` (CLOCK_MONOTONIC, comparable across processes on Linux) taken just before publish.',
    '- The load client opens raw TCP sockets (node:net) with `GET /events HTTP/1.1`, de-chunks the chunked body and counts events by the ' +
      'end-of-event marker `</div>\\n\\n` (Buffer#indexOf over a shared read buffer). In every warm-up burst, socket 0 is also run through ' +
      'eventsource-parser and every event must be a `message` whose data is exactly the published HTML, in sequence; any lost, duplicated or ' +
      'altered event fails the kind for that round.',
    "- Per kind and round: warm-up (2 verified bursts of 300 events per socket at 100 clients); idle memory (gc'd `heapUsed` and RSS with N connected idle clients minus " +
      'with none, divided by N); then for each N (largest first) a verified warm-up burst and a timed burst of K awaited publishes ' +
      '(the publisher yields to the event loop with setImmediate after each). Delivered events/s = N×K / (time from the first publish to the ' +
      'moment the client has all N×K events); server CPU = `process.cpuUsage()` delta in the server over the burst. Connection setup is never timed.',
    `- Latency: ${fmtInt(opt.latClients)} clients, ${opt.latRate} publishes/s for ${opt.latSeconds} s after a 0.5 s warm-up; latency = receive time ` +
      '(hrtime at the socket read that completed the event) minus the publish timestamp inside the HTML; p50/p99 over all events of all sockets.',
    ''
  )
  return L.join('\n')
}

process.on('SIGINT', () => {
  log('\ninterrupted')
  removeSnapshot()
  process.exit(130) // children exit on IPC disconnect
})

try {
  await main()
} finally {
  removeSnapshot()
}
