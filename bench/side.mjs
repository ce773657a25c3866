// One side of a comparison: a server child (CPU 0) and its own load client
// (CPU 1), with the measurements every scenario shares. A side's client holds
// only that side's sockets, so two sides of 19,000 streams each stay under
// the 20,000 descriptors a process may open here.

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

  /**
   * k awaited publishes to every stream; socket 0 is checked event by event.
   * Returns delivered events/s, server CPU ms per 1,000 events, the client's
   * busy share, the lag (share of the wall time after the publish loop
   * ended) and the CPUs other processes used meanwhile.
   */
  async burst(k) {
    const seq0 = nextSeq(k)
    const acct = cpuAccount()
    const [s0, c0] = await Promise.all([this.server.rpc('cpu'), this.load.rpc('cpu')])
    await this.load.rpc('arm', { k, verify: 1, seq0, expect: this.n })
    const sent = await this.server.rpc('burst', { k, seq0 }, 600_000)
    const done = await this.load.next('done', 600_000)
    const [s1, c1] = await Promise.all([this.server.rpc('cpu'), this.load.rpc('cpu')])
    const events = this.n * k
    const wallMs = (done.t - sent.t0) / 1e6
    const v = done.verify
    if (v.events !== k || v.lost || v.dups || v.bad) this.problem(`burst of ${k}: socket 0 ${JSON.stringify(v)}`)
    return {
      eps: events / (wallMs / 1000),
      cpu: (s1 - s0) / (events / 1000),
      clientBusy: (c1 - c0) / wallMs,
      lag: Math.max(0, 1 - sent.ms / wallMs),
      other: acct.end(s1 - s0 + c1 - c0)
    }
  }

  /** rate publishes/s for `seconds` to every stream (after one second not counted): latency p50/p99 in ms. */
  async latency(rate, seconds) {
    let done
    for (const count of [rate, rate * seconds]) {
      await this.load.rpc('arm', { k: count, latency: true, expect: this.n })
      await this.server.rpc('paced', { rate, count, seq0: nextSeq(count) }, 600_000)
      done = await this.load.next('done', 120_000)
    }
    return done.latency
  }

  async stop() {
    await Promise.all([this.server.stop(), this.load?.stop()])
  }
}
