/**
 * Prometheus metrics through OpenTelemetry, wired as an app would: a
 * MeterProvider read by the Prometheus exporter, set as the global provider
 * when this module loads. Import it before the plugin registers: the plugin
 * takes its meter from the global provider then.
 */
import { metrics } from '@opentelemetry/api'
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'

// The app answers /metrics itself, so the exporter starts no server of its own.
const exporter = new PrometheusExporter({ preventServerStart: true })
metrics.setGlobalMeterProvider(new MeterProvider({ readers: [exporter] }))
const serializer = new PrometheusSerializer()

/** The current metrics, in Prometheus' text format. */
export async function prometheusText(): Promise<string> {
  const { resourceMetrics } = await exporter.collect()
  return serializer.serialize(resourceMetrics)
}
