#!/usr/bin/env node
// Bursts: several publishes in one event-loop turn, this plugin against raw node:http writing each frame to each
// response (naive) and raw node:http writing a turn's frames concatenated, once per response (coalescing). Issue 16;
// see bench/README.md.
//
//   node bench/burst.mjs [--rounds 5] [--clients 1000,5000] [--per-turn 1,10,100] [--events 100000,400000,800000]
//                        [--await-each 0] [--lat-clients 1000] [--lat-rate 5] [--lat-seconds 4] [--profile <dir>]
//                        [--refs <commit>,<commit>]
//
// --events: deliveries per burst (clients × publishes) for each --per-turn value; more for larger turns, which
// deliver faster, so that every timed burst lasts a second or more. --await-each 1: a turn's publishes awaited one by
// one (`for (…) await app.sse.publish(…)`) instead of called back to back and awaited together.
// --profile <dir>: one round, the V8 profiler on around each side's timed bursts; writes
// <dir>/<side>-<clients>-<per turn>.cpuprofile, prints where the time went, and writes no report.
// --refs: one `ours` side per commit (each built privately), e.g. before and after a change, measured in the same
// rounds; their ratio to each other is then as free of the machine's drift as their ratios to raw.

import { mkdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { report } from './cpuprofile.mjs'
import { buildOurs } from './harness.mjs'
import { Side } from './side.mjs'
import { busy, checked, median, paired, ratio, save, scenario } from './stats.mjs'

const { o, ours, log } = await scenario('burst', {
  rounds: 5,
  clients: '1000,5000',
  'per-turn': '1,10,100',
  events: '100000,400000,800000',
  'await-each': 0,
  'lat-clients': 1000,
  'lat-rate': 5,
  'lat-seconds': 4,
  profile: '',
  refs: ''
})
const builds = o.refs ? o.refs.split(',').map((ref) => buildOurs(ref)) : [ours]
const [NAIVE, COAL] = ['naive raw', 'coalescing raw']
const OURS = builds.map((b) => (builds.length > 1 ? `ours ${b.commit}` : 'ours'))
const SIDES = [
  ...builds.map((b, i) => [OURS[i], { kind: 'ours', ours: b.dir }]),
  [NAIVE, { kind: 'raw', ids: true }],
  [COAL, { kind: 'raw', ids: true, coalesce: true }]
]
const names = SIDES.map(([name]) => name)
const Ns = o.clients.split(',').map(Number)
Ns.sort((a, b) => a - b)
const desc = [...Ns].reverse()
const turns = o['per-turn'].split(',').map(Number)
const events = o.events.split(',').map(Number)
const latN = o['lat-clients']
const rounds = o.profile ? 1 : o.rounds
const awaitEach = o['await-each'] === 1
/** Publishes per burst: about the deliveries asked for this turn size, a whole number of turns, at least one. */
const kFor = (n, p) => p * Math.max(1, Math.round((events[turns.indexOf(p)] ?? events.at(-1)) / n / p))
const caseKey = (n, p) => `${n}x${p}`
const cases = desc.flatMap((n) => turns.map((p) => [n, p]))

// per side: eps / cpu / busy per case, heap per N, p50 / p99: lists over rounds, in round order
const res = Object.fromEntries(
  names.map((s) => [s, { eps: {}, cpu: {}, busy: {}, heap: {}, rss: {}, p50: [], p99: [] }])
)
const push = (obj, key, v) => (obj[key] ??= []).push(v)
const problems = []
if (o.profile) mkdirSync(o.profile, { recursive: true })

for (let r = 0; r < rounds; r++) {
  const sides = []
  for (const [name, opts] of SIDES) sides.push(await Side.start(name, opts))
  const mem0 = await Promise.all(sides.map((s) => s.mem()))
  for (const n of Ns) {
    log(`round ${r + 1}/${rounds}: ${n} idle streams per side`)
    for (const s of sides) await s.connect(n)
    for (const [i, s] of sides.entries()) {
      const m = await s.mem()
      push(res[s.name].heap, n, (m.heapUsed - mem0[i].heapUsed) / n)
      push(res[s.name].rss, n, (m.rss - mem0[i].rss) / n)
    }
  }
  for (const n of desc) {
    for (const s of sides) await s.connect(n)
    // warm-up, checked like every burst
    for (const s of sides) await s.burst(10, { perTurn: 10, awaitEach, exact: true })
    for (const p of turns) {
      const k = kFor(n, p)
      log(`round ${r + 1}/${rounds}: ${n} streams, ${k} publishes, ${p} per turn`)
      const got = await paired(
        r,
        async (i) => {
          const s = sides[i]
          if (o.profile) await s.server.rpc('profile', {})
          const b = await s.burst(k, { perTurn: p, awaitEach, exact: true })
          if (o.profile) {
            const file = path.join(o.profile, `${s.name.replace(' ', '-')}-${n}-${p}.cpuprofile`)
            await s.server.rpc('profile', { file })
            console.log(`== ${s.name}, ${n} streams, ${k} publishes, ${p} per turn: ${file}`)
            console.log(report(JSON.parse(readFileSync(file, 'utf8'))).join('\n'))
          }
          return b
        },
        sides.length
      )
      got.forEach((b, i) => {
        const x = res[names[i]]
        push(x.eps, caseKey(n, p), b.eps)
        push(x.cpu, caseKey(n, p), b.cpu)
        push(x.busy, caseKey(n, p), busy(b))
      })
    }
    if (n === latN && !o.profile) {
      log(`round ${r + 1}/${rounds}: latency of single publishes, ${o['lat-rate']}/s to ${n} streams`)
      const lat = await paired(r, (i) => sides[i].latency(o['lat-rate'], o['lat-seconds']), sides.length)
      lat.forEach((l, i) => {
        res[names[i]].p50.push(l.p50)
        res[names[i]].p99.push(l.p99)
      })
    }
  }
  for (const s of sides) problems.push(...s.problems.map((p) => `${s.name}: ${p}`))
  await Promise.all(sides.map((s) => s.stop()))
}

if (o.profile) {
  if (problems.length) console.error(`PROBLEMS: ${problems.join('; ')}`)
  process.exit(problems.length ? 1 : 0)
}

const times = (x) => (x == null ? '–' : `${x.toFixed(2)}×`)
const [FIRST, LAST] = [OURS[0], OURS.at(-1)]
/**
 * A row per case: naive, coalescing, each ours (medians); each ours / naive and / coalescing, the last ours / the
 * first (with --refs), coalescing / naive (medians of per-round ratios).
 */
const caseRows = (key) =>
  cases.map(([n, p]) => {
    const of = (side) => res[side][key][caseKey(n, p)]
    const x = (a, b) => times(ratio(of(a), of(b)))
    const mine = OURS.flatMap((s) => [x(s, NAIVE), x(s, COAL)])
    const change = OURS.length > 1 ? [x(LAST, FIRST)] : []
    return [
      n,
      p,
      median(of(NAIVE)),
      median(of(COAL)),
      ...OURS.map((s) => median(of(s))),
      ...mine,
      ...change,
      x(COAL, NAIVE)
    ]
  })
const caseHead = (what) => [
  'clients',
  'per turn',
  `${NAIVE} ${what}`,
  `${COAL} ${what}`,
  ...OURS.map((s) => `${s} ${what}`),
  ...OURS.flatMap((s) => [`${s} / naive`, `${s} / coalescing`]),
  ...(OURS.length > 1 ? [`${LAST} / ${FIRST}`] : []),
  'coalescing / naive'
]
/** Per side and round, the bytes each stream past the fewest adds: (N·perStream(N) − n·perStream(n)) / (N − n). */
const slope = (side, key) => {
  const [n, N] = [Ns[0], Ns.at(-1)]
  return res[side][key][N].map((v, i) => (v * N - res[side][key][n][i] * n) / (N - n))
}
/** A row per N and, with two or more, the marginal bytes per stream between the fewest and the most. */
const memRows = (key) => {
  const row = (label, m) => {
    const mine = OURS.flatMap((s) => [times(m(s) / m(NAIVE)), times(m(s) / m(COAL))])
    return [label, m(NAIVE), m(COAL), ...OURS.map(m), ...mine]
  }
  const rows = Ns.map((n) => row(n, (side) => median(res[side][key][n])))
  if (Ns.length > 1) rows.push(row(`${Ns[0]}→${Ns.at(-1)}, marginal`, (side) => median(slope(side, key))))
  return rows
}
const memHead = (what) => [
  'clients',
  `${NAIVE} ${what}`,
  `${COAL} ${what}`,
  ...OURS.map((s) => `${s} ${what}`),
  ...OURS.flatMap((s) => [`${s} / naive`, `${s} / coalescing`])
]
const latOf = (key) => names.map((s) => res[s][key])
await save('burst', {
  title: 'Bursts: publishes per event-loop turn, against naive and coalescing raw node:http',
  ...(builds.length > 1 ? { ours: builds.map((b) => b.commit).join(', ') } : {}),
  notes: [
    `${rounds} rounds; each round ${SIDES.length} fresh server processes (CPU 0), each with its own load client (CPU 1), all holding N streams at once; each timed burst run on the ${SIDES.length} in turn, the first one rotating between rounds; values are medians over rounds, ratios the medians of the per-round ratios`,
    ...(builds.length > 1 ? [`ours built from ${builds.map((b) => b.commit).join(', ')} (--refs), side by side`] : []),
    `ours: \`app.sse.publish\` with the memory broker (replay 0, heartbeats off); naive raw: \`node:http\`, one Buffer per publish written to every response; coalescing raw: the Buffers of one turn concatenated once (on the next tick) and written once per response; every frame carries an id of the memory broker's shape (\`<epoch>-<n>\`)`,
    `a burst: k publishes, \`per turn\` of them ${awaitEach ? 'awaited one by one' : 'called back to back and awaited together'}, then \`setImmediate\`; k per case: ${cases.map(([n, p]) => `${n}×${p}: ${kFor(n, p)}`).join(', ')}; a 3-line ~300-byte fragment`,
    'issue 16 goals at 10 and 100 per turn: events/s ≥ 1.5× naive and ≥ 0.9× coalescing, CPU ≤ 0.7× naive; single events (1 per turn) ≥ 0.95×; isolated p99 ≤ raw; heap per idle stream ≤ 1.1× raw',
    checked(
      problems,
      'every burst: socket 0 checked event by event with eventsource-parser (exact data, in order, once, ids equal to those the publishes returned) and every socket received what socket 0 did (the length and CRC-32 of its body bytes)'
    )
  ],
  tables: [
    { title: 'Delivered events/s (higher is better)', head: caseHead('events/s'), rows: caseRows('eps') },
    {
      title: 'Server CPU ms per 1,000 delivered events (lower is better)',
      head: caseHead('CPU'),
      rows: caseRows('cpu')
    },
    {
      title: `Latency of isolated single publishes: ${latN.toLocaleString('en-US')} clients, ${o['lat-rate']}/s for ${o['lat-seconds']} s, ms (lower is better)`,
      head: ['', ...names],
      rows: [
        ['p50', ...latOf('p50').map(median)],
        ['p99', ...latOf('p99').map(median)],
        ['p99 per round', ...latOf('p99').map((v) => v.map((x) => x.toFixed(0)).join(', '))],
        ...OURS.map((s) => [
          `${s} p99 / this p99`,
          ...names.map((t) => (t === s ? '' : times(ratio(res[s].p99, res[t].p99))))
        ])
      ],
      notes: [
        'receive time − publish time over every event of every client; each publish is delivered before the next one; the p99 of a round moves with what other processes do meanwhile'
      ]
    },
    {
      title: 'Server heap per idle stream, bytes (after gc; lower is better)',
      head: memHead('heap'),
      rows: memRows('heap'),
      notes: [
        '(heap with N idle streams − heap with none) / N, fresh server; marginal: what each stream past the first ones adds (one-time allocations of the first requests left out); ratios of the medians'
      ]
    },
    { title: 'Server RSS per idle stream, bytes', head: memHead('RSS'), rows: memRows('rss') },
    {
      title: 'Is the load client keeping up? client busy / lag / CPUs used by other processes, per timed burst',
      head: ['clients', 'per turn', ...names],
      rows: cases.map(([n, p]) => [n, p, ...names.map((s) => res[s].busy[caseKey(n, p)].join(', '))]),
      notes: ['busy: load-client CPU / burst wall time; lag: share of the burst after the publish loop ended']
    }
  ],
  data: res
})
process.exit(problems.length ? 1 : 0)
