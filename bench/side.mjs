// One side of a comparison (a server child on CPU 0 with its own load client on CPU 1, see bench/README.md), and
// the measurements every scenario shares: connect, memory, burst, latency.

import { Child, sleep } from './harness.mjs'
import { cpuAccount } from './stats.mjs'

let seq = 0
/** Sequence numbers unique in the run, so every event can be checked. */
export const nextSeq = (n) => {
  seq += n
  return seq - n
}

export async function until(fn, what, timeoutMs = 120_000) {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

export class Side {
  /** opts: servers.mjs options ({ kind, ours, broker, plugin, ... }). */
  static async start(name, opts, { client = true } = {}) {
    const server = new Child(`server:${name}`, 'servers.mjs', [JSON.stringify(opts)], {
      cpu: 0,
      execArgv: ['--expose-gc']
    })
    const load = client ? new Child(`load:${name}`, 'load.mjs', [], { cpu: 1 }) : null
    const [{ port }] = await Promise.all([server.next('ready'), load?.next('ready')])
    return new Side(name, server, load, port)
  }

  constructor(name, server, load, port) {
    Object.assign(this, { name, server, load, port, n: 0, problems: [] })
  }

  problem(text) {
    if (this.problems.length < 20) this.problems.push(text)
  }

  /** Open or close sockets until the server holds n streams. */
  async connect(n, opts = {}) {
    if (n < this.n) {
      await this.load.rpc('close', {})
      this.n = 0
      await until(async () => (await this.server.rpc('count')) === 0, `${this.name} to drop its streams`)
    }
    if (n > this.n) await this.load.rpc('connect', { port: this.port, n: n - this.n, ...opts }, 600_000)
    this.n = n
    await until(async () => (await this.server.rpc('count')) === n, `${this.name} to hold ${n} streams`)
  }

  /** gc'd heap and RSS of the server. */
  mem() {
    return this.server.rpc('mem')
  }

  burst(k, opts) {
    return burst([this], k, this, opts)
  }

  latency(rate, seconds) {
    return latency([this], rate, seconds)
  }

  async stop() {
    await Promise.all([this.server.stop(), this.load?.stop()])
  }
}

/** CPU ms of every process of the sides (servers, clients). */
const cpus = (sides) => Promise.all(sides.flatMap((s) => [s.server.rpc('cpu'), s.load ? s.load.rpc('cpu') : 0]))
const sum = (a) => a.reduce((x, y) => x + y, 0)

/**
 * k awaited publishes on `publisher` to every stream of `sides`, socket 0 of each side checked event by event:
 * { eps, cpu (all servers, ms per 1,000 events), clientBusy, lag, other, wallMs }, as in bench/README.md.
 * opts: `perTurn` publishes in one event-loop turn (1), `awaitEach` (awaited one by one, not together); `exact`:
 * also socket 0's ids must be the ids the publishes returned, and every socket must receive the bytes socket 0 did.
 */
export async function burst(sides, k, publisher = sides[0], { perTurn = 1, awaitEach = false, exact = false } = {}) {
  const seq0 = nextSeq(k)
  const acct = cpuAccount()
  const c0 = await cpus(sides)
  for (const s of sides) if (s.load && s.n) await s.load.rpc('arm', { k, verify: 1, seq0, expect: s.n, exact })
  const sent = await publisher.server.rpc('burst', { k, seq0, perTurn, awaitEach, ids: exact }, 600_000)
  const dones = await Promise.all(sides.map((s) => (s.load && s.n ? s.load.next('done', 600_000) : null)))
  const c1 = await cpus(sides)
  const d = c1.map((v, i) => v - c0[i])
  const events = k * sum(sides.map((s) => (s.load ? s.n : 0)))
  const wallMs = (Math.max(...dones.map((x) => x?.t ?? 0)) - sent.t0) / 1e6
  dones.forEach((done, i) => {
    const v = done?.verify
    if (v && (v.events !== k || v.lost || v.dups || v.bad)) {
      const { ids, ...counts } = v
      sides[i].problem(`burst of ${k}: socket 0 ${JSON.stringify(counts)}`)
    }
    if (!exact || !done) return
    const off = sent.ids.findIndex((id, j) => v.ids?.[j] !== id)
    if (off >= 0 || v.ids?.length !== k)
      sides[i].problem(
        `burst of ${k}: socket 0 got ids ${v.ids?.[off] ?? v.ids?.length} where ${sent.ids[off] ?? k} were published`
      )
    if (done.exact.sockets !== sides[i].n || done.exact.differ > 0)
      sides[i].problem(
        `burst of ${k}: ${done.exact.differ} of ${done.exact.sockets} sockets got other bytes than socket 0`
      )
  })
  return {
    eps: events / (wallMs / 1000),
    cpu: sum(d.filter((_, i) => i % 2 === 0)) / (events / 1000),
    clientBusy: sum(d.filter((_, i) => i % 2 === 1)) / wallMs,
    lag: Math.max(0, 1 - sent.ms / wallMs),
    other: acct.end(sum(d)),
    wallMs
  }
}

/** rate publishes/s on the first side for `seconds` (after one second not counted): the worst side's p50/p99, ms. */
export async function latency(sides, rate, seconds) {
  let dones
  for (const count of [rate, rate * seconds]) {
    for (const s of sides) if (s.load && s.n) await s.load.rpc('arm', { k: count, latency: true, expect: s.n })
    await sides[0].server.rpc('paced', { rate, count, seq0: nextSeq(count) }, 600_000)
    dones = await Promise.all(sides.filter((s) => s.load && s.n).map((s) => s.load.next('done', 120_000)))
  }
  return { p50: Math.max(...dones.map((d) => d.latency.p50)), p99: Math.max(...dones.map((d) => d.latency.p99)) }
}
