#!/usr/bin/env node
// Metrics cost: fan-out with an OpenTelemetry SDK registered, and with the SDK only loaded, against the same server without one. See bench/README.md.
//
//   node bench/metrics.mjs [--rounds 5] [--clients 1000] [--events 100000]

import { Side } from './side.mjs'
import { checked, median, paired, pairs, ratio, save, scenario } from './stats.mjs'

const { o, ours, log } = await scenario('metrics', { rounds: 5, clients: 1000, events: 100000 })
const n = o.clients
const k = Math.max(20, Math.round(o.events / n))
const sides = [
  await Side.start('without', { kind: 'ours', ours: ours.dir }),
  await Side.start('with OpenTelemetry', { kind: 'ours', ours: ours.dir, otel: true }),
  await Side.start('SDK loaded only', { kind: 'ours', ours: ours.dir, otel: 'loaded' })
]
for (const s of sides) {
  await s.connect(n)
  await s.burst(Math.ceil(k / 4))
}
const res = { eps: [[], [], []], cpu: [[], [], []] }
for (let r = 0; r < o.rounds; r++) {
  log(`round ${r + 1}/${o.rounds}`)
  const got = await paired(r, (i) => sides[i].burst(k), sides.length)
  for (const i of [0, 1, 2]) {
    res.eps[i].push(got[i].eps)
    res.cpu[i].push(got[i].cpu)
  }
}
const recorded = await sides[1].server.rpc('metrics')
const problems = sides.flatMap((s) => s.problems)
if (!(recorded['sse.events.delivered'] > 0))
  problems.push(`no sse.events.delivered recorded: ${JSON.stringify(recorded)}`)
await Promise.all(sides.map((s) => s.stop()))

const x = (key, i) => ({ v: median(res[key][i]), x: ratio(res[key][i], res[key][0]) })
await save('metrics', {
  title: 'Metrics cost: fan-out with an OpenTelemetry SDK registered',
  notes: [
    `three servers side by side, ${n.toLocaleString('en-US')} streams each; ${o.rounds} rounds of a burst of ${k} events per stream on each, in rotating order; (×) the median of the per-round ratios to the server without an SDK`,
    "with an SDK: `@opentelemetry/sdk-metrics` MeterProvider with a PeriodicExportingMetricReader (in-memory exporter, 10 s), `metrics.setGlobalMeterProvider()` before `register(htmlSse)`; SDK loaded only: the same, without `setGlobalMeterProvider()`, so the plugin records into the API's no-op meter",
    `read back from the SDK after the run: ${pairs(recorded)}`,
    checked(problems, 'every burst: socket 0 checked event by event, every socket got every event')
  ],
  tables: [
    {
      title: `Delivered events/s and server CPU at ${n.toLocaleString('en-US')} streams`,
      head: ['server', 'events/s', 'CPU ms / 1,000 events'],
      rows: [
        ['without an SDK', median(res.eps[0]), median(res.cpu[0])],
        ['with an SDK', x('eps', 1), x('cpu', 1)],
        ['SDK loaded, not registered', x('eps', 2), x('cpu', 2)]
      ]
    }
  ],
  data: { res, recorded }
})
process.exit(problems.length ? 1 : 0)
