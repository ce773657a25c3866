#!/usr/bin/env node
// Scale: up to 19,000 streams in one process, this plugin against raw node:http. See bench/README.md.
//
//   node bench/scale.mjs [--rounds 3] [--clients 1000,5000,10000,19000] [--events 100000]

import { Side } from './side.mjs'
import { busy, checked, median, paired, ratio, save, scenario } from './stats.mjs'

const { o, ours, log } = await scenario('scale', { rounds: 3, clients: '1000,5000,10000,19000', events: 100000 })
const Ns = o.clients.split(',').map(Number)
const kFor = (n) => Math.max(10, Math.round(o.events / n))
const kinds = ['raw', 'ours']
const res = Object.fromEntries(
  kinds.map((k) => [k, Object.fromEntries(Ns.map((n) => [n, { eps: [], cpu: [], heap: [], rss: [], busy: [] }]))])
)
const problems = []

for (let r = 0; r < o.rounds; r++) {
  const sides = await Promise.all(kinds.map((kind) => Side.start(kind, { kind, ours: ours.dir })))
  const mem0 = await Promise.all(sides.map((s) => s.mem()))
  for (const n of Ns) {
    log(`round ${r + 1}/${o.rounds}: ${n} streams`)
    for (const s of sides) await s.connect(n)
    const mems = await Promise.all(sides.map((s) => s.mem()))
    const k = kFor(n)
    for (const s of sides) await s.burst(Math.ceil(k / 4)) // warm-up
    const bursts = await paired(r, (i) => sides[i].burst(k))
    kinds.forEach((kind, i) => {
      const row = res[kind][n]
      row.eps.push(bursts[i].eps)
      row.cpu.push(bursts[i].cpu)
      row.heap.push((mems[i].heapUsed - mem0[i].heapUsed) / n)
      row.rss.push((mems[i].rss - mem0[i].rss) / n)
      row.busy.push(busy(bursts[i]))
    })
  }
  for (const s of sides) problems.push(...s.problems.map((p) => `${s.name}: ${p}`))
  await Promise.all(sides.map((s) => s.stop()))
}

const rows = (key) =>
  Ns.map((n) => [
    n,
    median(res.raw[n][key]),
    { v: median(res.ours[n][key]), x: ratio(res.ours[n][key], res.raw[n][key]) }
  ])
const head = (what) => ['streams', `raw ${what}`, `ours ${what}`]
await save('scale', {
  title: 'Scale: up to 19,000 streams in one process, against raw node:http',
  notes: [
    `${o.rounds} rounds; raw and ours each in their own server process (CPU 0) with their own load client (CPU 1), both holding N streams at once; bursts alternate raw/ours; values are medians over rounds, (×) the median of the per-round ratios`,
    `burst per stream K: ${Ns.map((n) => `N=${n}: ${kFor(n)}`).join(', ')}; memory: (gc'd value with N streams − with none) / N, in the same server as it grows`,
    checked(problems, 'every burst: socket 0 checked event by event, every socket got every event')
  ],
  tables: [
    { title: 'Delivered events/s', head: head('events/s'), rows: rows('eps') },
    { title: 'Server CPU ms per 1,000 delivered events', head: head('CPU'), rows: rows('cpu') },
    { title: 'Heap bytes per stream', head: head('heap B'), rows: rows('heap') },
    { title: 'RSS bytes per stream', head: head('RSS B'), rows: rows('rss') },
    {
      title: 'Load client busy / lag / CPUs used by other processes (timed bursts)',
      head: head('busy / lag / other'),
      rows: Ns.map((n) => [n, res.raw[n].busy.join(', '), res.ours[n].busy.join(', ')])
    }
  ],
  data: res
})
process.exit(problems.length ? 1 : 0)
