#!/usr/bin/env node
// Fan-out: one publisher, N streams, this plugin and the other SSE libraries for Fastify against raw node:http in
// the same run. See bench/README.md.
//
//   node bench/fanout.mjs [--rounds 3] [--clients 100,1000,5000] [--kinds ...] [--events 100000]
//                         [--lat-clients 1000] [--lat-rate 20] [--lat-seconds 5]

import { Side } from './side.mjs'
import { busy, checked, median, paired, save, scenario } from './stats.mjs'

const { o, ours, log } = await scenario('fanout', {
  rounds: 3,
  clients: '100,1000,5000',
  kinds: 'fastify-sse,better-sse,fastify-sse-v2,ours',
  events: 100000,
  'lat-clients': 1000,
  'lat-rate': 20,
  'lat-seconds': 5
})
const Ns = o.clients.split(',').map(Number)
Ns.sort((a, b) => a - b)
const desc = [...Ns].reverse()
const kinds = o.kinds.split(',')
const all = ['raw', ...kinds]
const latN = o['lat-clients']
const kFor = (n) => Math.max(20, Math.min(3000, Math.round(o.events / n)))
// per kind: { eps: {N: [..]}, cpu, mem heap/rss per N, lat p50/p99, and the per-pair ratios and busy shares }
const res = Object.fromEntries(
  all.map((k) => [k, { eps: {}, cpu: {}, heap: {}, rss: {}, p50: [], p99: [], pairs: {} }])
)
const push = (obj, key, v) => (obj[key] ??= []).push(v)
const problems = []

/** Grow side `s` to n streams and record its memory per stream. */
async function grow(s, kind, mem0, n) {
  await s.connect(n)
  const m = await s.mem()
  push(res[kind].heap, n, (m.heapUsed - mem0.heapUsed) / n)
  push(res[kind].rss, n, (m.rss - mem0.rss) / n)
}

for (let r = 0; r < o.rounds; r++) {
  const ref = await Side.start('raw', { kind: 'raw' })
  const refMem0 = await ref.mem()
  for (const kind of kinds.map((_, i) => kinds[(i + r) % kinds.length])) {
    log(`round ${r + 1}/${o.rounds}: ${kind}`)
    const side = await Side.start(kind, { kind, ours: ours.dir })
    const both = [side, ref]
    const mem0 = await side.mem()
    for (const n of Ns) {
      await grow(side, kind, mem0, n)
      if (ref.n < n) await grow(ref, 'raw', refMem0, n)
    }
    for (const n of desc) {
      await Promise.all(both.map((s) => s.connect(n)))
      const k = kFor(n)
      for (const s of both) await s.burst(Math.ceil(k / 8)) // warm-up, checked like every burst
      const [a, b] = await paired(r, (i) => both[i].burst(k))
      for (const key of ['eps', 'cpu']) {
        push(res[kind][key], n, a[key])
        push(res.raw[key], n, b[key])
        push(res[kind].pairs, `${key}${n}`, a[key] / b[key])
      }
      push(res[kind].pairs, `busy${n}`, busy(a))
      if (n === latN) {
        const [la, lb] = await paired(r, (i) => both[i].latency(o['lat-rate'], o['lat-seconds']))
        res[kind].p50.push(la.p50)
        res[kind].p99.push(la.p99)
        res.raw.p50.push(lb.p50)
        res.raw.p99.push(lb.p99)
        push(res[kind].pairs, 'p99', la.p99 / lb.p99)
      }
    }
    problems.push(...side.problems.map((p) => `${kind}: ${p}`))
    await side.stop()
  }
  problems.push(...ref.problems.map((p) => `raw: ${p}`))
  await ref.stop()
}

const cellOf = (kind, series, pairKey) => {
  const v = median(series)
  return kind === 'raw' ? { v } : { v, x: median(res[kind].pairs[pairKey] ?? []) }
}
const mem = (kind, key, n) => ({
  v: median(res[kind][key][n]),
  x: kind === 'raw' ? null : median(res[kind][key][n]) / median(res.raw[key][n])
})
const N = (n) => `N=${n.toLocaleString('en-US')}`
const head = (what) => ['kind', ...Ns.map((n) => `${what} ${N(n)}`)]
const max = Ns.at(-1)
await save('fanout', {
  title: 'Fan-out: this plugin and the other SSE libraries against raw node:http',
  notes: [
    `${o.rounds} rounds; each kind in a fresh server process per round, each timed burst paired with one of a raw reference server right before or after it (alternating); values are medians over rounds, (×) the median of the per-pair ratios`,
    `burst per socket K: ${desc.map((n) => `N=${n}: ${kFor(n)}`).join(', ')}; payload: a 3-line ~300-byte fragment as an unnamed event; server on CPU 0, load client on CPU 1`,
    checked(
      problems,
      'every burst: socket 0 checked event by event with eventsource-parser (exact data, in order, once) and every socket got every event'
    )
  ],
  tables: [
    {
      title: 'Delivered events/s (higher is better)',
      head: head('events/s'),
      rows: all.map((k) => [k, ...Ns.map((n) => cellOf(k, res[k].eps[n], `eps${n}`))])
    },
    {
      title: 'Server CPU ms per 1,000 delivered events (lower is better)',
      head: head('CPU'),
      rows: all.map((k) => [k, ...Ns.map((n) => cellOf(k, res[k].cpu[n], `cpu${n}`))])
    },
    {
      title: `Publish-to-receive latency, ${latN.toLocaleString('en-US')} clients × ${o['lat-rate']}/s for ${o['lat-seconds']} s, ms (lower is better)`,
      head: ['kind', 'p50', 'p99'],
      rows: all.map((k) => [k, median(res[k].p50), cellOf(k, res[k].p99, 'p99')])
    },
    {
      title: 'Server memory per idle stream, bytes (after gc; lower is better)',
      head: ['kind', ...Ns.map((n) => `heap ${N(n)}`), `RSS ${N(max)}`],
      rows: all.map((k) => [k, ...Ns.map((n) => mem(k, 'heap', n)), mem(k, 'rss', max)]),
      notes: ['(heap with N idle streams − heap with none) / N, fresh server; (×) ratio of the medians']
    },
    {
      title: 'Is the load client keeping up? client busy / lag / CPUs used by other processes, per timed burst',
      head: head('busy / lag / other'),
      rows: kinds.map((k) => [k, ...Ns.map((n) => res[k].pairs[`busy${n}`].join(', '))]),
      notes: [
        'busy: load-client CPU / burst wall time; lag: share of the burst after the publish loop ended (≈0%: the server set the pace)'
      ]
    }
  ],
  data: res
})
process.exit(problems.length ? 1 : 0)
