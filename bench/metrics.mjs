#!/usr/bin/env node
// Metrics cost: fan-out with an OpenTelemetry SDK registered (a MeterProvider
// with a periodic reader, set as the global provider before the plugin
// registers) against the same server without one, in alternating pairs.
//
//   node bench/metrics.mjs [--rounds 5] [--clients 1000] [--events 100000]

import { parseArgs } from 'node:util'
import { buildOurs, lock } from './harness.mjs'
import { Side } from './side.mjs'
import { logger, median, paired, save } from './stats.mjs'

const { values: o } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    clients: { type: 'string', default: '1000' },
    events: { type: 'string', default: '100000' }
  }
})
const [rounds, n] = [Number(o.rounds), Number(o.clients)]
const k = Math.max(20, Math.round(Number(o.events) / n))
const log = logger('metrics')
const t0 = Date.now()

await lock()
const ours = buildOurs()
const sides = [
  await Side.start('without', { kind: 'ours', ours: ours.dir }),
  await Side.start('with OpenTelemetry', { kind: 'ours', ours: ours.dir, otel: true })
]
for (const s of sides) {
  await s.connect(n)
  await s.burst(Math.ceil(k / 4))
}
const res = { eps: [[], []], cpu: [[], []] }
for (let r = 0; r < rounds; r++) {
  log(`round ${r + 1}/${rounds}`)
  const pair = await paired(
    r,
    () => sides[0].burst(k),
    () => sides[1].burst(k)
  )
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

const ratio = (key) => median(res[key][1].map((v, i) => v / res[key][0][i]))
await save('metrics', {
  title: 'Metrics cost: fan-out with an OpenTelemetry SDK registered',
  command: `node bench/metrics.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  tookS: (Date.now() - t0) / 1000,
  ours: ours.commit,
  notes: [
    `two servers side by side, ${n.toLocaleString('en-US')} streams each; ${rounds} pairs of bursts of ${k} events per stream, alternating which goes first; (×) the median of the per-pair ratios`,
    'with: `@opentelemetry/sdk-metrics` MeterProvider with a PeriodicExportingMetricReader (in-memory exporter, 10 s), `metrics.setGlobalMeterProvider()` before `register(htmlSse)`',
    `read back from the SDK after the run: ${Object.entries(recorded)
      .map(([m, v]) => `${m} ${v}`)
      .join(', ')}`,
    problems.length
      ? `PROBLEMS: ${problems.join('; ')}`
      : 'every burst: socket 0 checked event by event, every socket got every event'
  ],
  tables: [
    {
      title: `Delivered events/s and server CPU at ${n.toLocaleString('en-US')} streams`,
      head: ['server', 'events/s', 'CPU ms / 1,000 events'],
      rows: [
        ['without an SDK', median(res.eps[0]), median(res.cpu[0])],
        ['with an SDK', { v: median(res.eps[1]), x: ratio('eps') }, { v: median(res.cpu[1]), x: ratio('cpu') }]
      ]
    }
  ],
  data: { res, recorded }
})
process.exit(problems.length ? 1 : 0)
