/**
 * Metrics read back through the OpenTelemetry SDK, registered as the global
 * MeterProvider before the plugin, as an app would.
 */
import { metrics } from '@opentelemetry/api'
import { type DataPoint, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import { test } from 'tap'
import { topicsApp } from './helpers/app.js'
import { connect, until } from './helpers/sse.js'

/** The SDK's pull-based reader: `collect()` on demand, nothing exported. */
class TestReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

const reader = new TestReader()
metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }))

/** Every data point of the `fastify-html-sse` meter, as `name{attr=value}` → value. */
async function readMetrics(): Promise<Map<string, number>> {
  const { resourceMetrics } = await reader.collect()
  const out = new Map<string, number>()
  for (const scope of resourceMetrics.scopeMetrics) {
    if (scope.scope.name !== 'fastify-html-sse') continue
    for (const metric of scope.metrics) {
      for (const point of metric.dataPoints as DataPoint<number>[]) {
        const attrs = Object.entries(point.attributes)
          .map(([k, v]) => `${k}=${String(v)}`)
          .join(',')
        out.set(attrs ? `${metric.descriptor.name}{${attrs}}` : metric.descriptor.name, point.value)
      }
    }
  }
  return out
}

test('the instruments count streams, refusals, events and resumes', async (t) => {
  const { app, base } = await topicsApp(t, ['news'], { maxConnections: 3 })
  const first = await app.sse.publish('news', '<p>0</p>')
  const a = await connect(`${base}/events`)
  const b = await connect(`${base}/events`, { 'last-event-id': first })
  const c = await connect(`${base}/events`, { 'last-event-id': 'unknown' })
  await until(() => app.sse.stats().topics.news === 3)
  const refused = await connect(`${base}/events`)
  await refused.ended
  t.match(refused.raw, /^event: retry\nretry: \d+\n\n$/, 'a refused SSE client is told when to come back')
  for (let i = 1; i <= 4; i++) await app.sse.publish('news', `<p>${i}</p>`)
  await a.waitFor(4)
  await b.waitFor(4)
  await c.waitFor(5)
  a.close()
  await until(() => app.sse.stats().connections === 2)

  const m = await readMetrics()
  t.equal(m.get('sse.streams.opened'), 3)
  t.equal(m.get('sse.streams.open'), 2)
  t.equal(m.get('sse.streams.closed{reason=client}'), 1)
  t.equal(m.get('sse.streams.refused{reason=max_connections}'), 1)
  t.equal(m.get('sse.events.published'), 5)
  t.equal(m.get('sse.events.delivered'), 12, 'four events to three streams; the resume had nothing to replay')
  t.equal(m.get('sse.resumes{outcome=replayed}'), 1)
  t.equal(m.get('sse.resumes{outcome=reset}'), 1)
  for (const name of m.keys()) t.notMatch(name, /news/, 'no topic name in any attribute')

  await app.close()
  const after = await readMetrics()
  t.equal(after.get('sse.streams.open'), 0)
  t.equal(after.get('sse.streams.closed{reason=shutdown}'), 2)
  b.close()
  c.close()
})
