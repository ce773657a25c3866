#!/usr/bin/env node
// Metrics cost: fan-out with an OpenTelemetry SDK registered against the same server without one. See bench/README.md.
//
//   node bench/metrics.mjs [--rounds 5] [--clients 1000] [--events 100000]

import { Side } from './side.mjs'
import { checked, median, paired, pairs, ratio, save, scenario } from './stats.mjs'

const { o, ours, log } = await scenario('metrics', { rounds: 5, clients: 1000, events: 100000 })
const n = o.clients
const k = Math.max(20, Math.round(o.events / n))
const sides = [
  await Side.start('without', { kind: 'ours', ours: ours.dir }),
  await Side.start('with OpenTelemetry', { kind: 'ours', ours: ours.dir, otel: true })
]
for (const s of sides) {
  await s.connect(n)
  await s.burst(Math.ceil(k / 4))
}
const res = { eps: [[], []], cpu: [[], []] }
for (let r = 0; r < o.rounds; r++) {
  log(`round ${r + 1}/${o.rounds}`)
  const pair = await paired(r, (i) => sides[i].burst(k))
  for (const i of [0, 1]) {
    res.eps[i].push(pair[i].eps)
    res.cpu[i].push(pair[i].cpu)
  }
}
const recorded = await sides[1].server.rpc('metrics')
const problems = sides.flatMap((s) => s.problems)
if (!(recorded['sse.events.delivered'] > 0))
  problems.push(`no sse.events.delivered recorded: ${JSON.stringify(recorded)}`)
await Promise.all(sides.map((s) => s.stop()))

const x = (key) => ({ v: median(res[key][1]), x: ratio(res[key][1], res[key][0]) })
await save('metrics', {
  title: 'Metrics cost: fan-out with an OpenTelemetry SDK registered',
  notes: [
    `two servers side by side, ${n.toLocaleString('en-US')} streams each; ${o.rounds} pairs of bursts of ${k} events per stream, alternating which goes first; (×) the median of the per-pair ratios`,
    'with: `@opentelemetry/sdk-metrics` MeterProvider with a PeriodicExportingMetricReader (in-memory exporter, 10 s), `metrics.setGlobalMeterProvider()` before `register(htmlSse)`',
    `read back from the SDK after the run: ${pairs(recorded)}`,
    checked(problems, 'every burst: socket 0 checked event by event, every socket got every event')
  ],
  tables: [
    {
      title: `Delivered events/s and server CPU at ${n.toLocaleString('en-US')} streams`,
      head: ['server', 'events/s', 'CPU ms / 1,000 events'],
      rows: [
        ['without an SDK', median(res.eps[0]), median(res.cpu[0])],
        ['with an SDK', x('eps'), x('cpu')]
      ]
    }
  ],
  data: { res, recorded }
})
process.exit(problems.length ? 1 : 0)
