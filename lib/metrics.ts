/**
 * Metrics through the OpenTelemetry API. `@opentelemetry/api` is an optional
 * peer dependency: a library records through the API and the app picks the SDK
 * and exporter. Without the API nothing is recorded and each call is an empty
 * function; without an SDK the API's own no-op meter takes the calls.
 *
 * Every call sits on a path that runs once per stream or once per published
 * event, never once per socket write. No topic names become attributes: they
 * are unbounded.
 */
import { CLOSE_REASONS, type CloseReason } from './types.js'

/** Why a stream was refused; the `reason` attribute of `sse.streams.refused`. */
export type RefuseReason = 'max_connections' | 'max_connections_per_client'

/** How a resume went; the `outcome` attribute of `sse.resumes`. */
export type ResumeOutcome = 'replayed' | 'reset' | 'unavailable'

/** What the plugin records. */
export interface Metrics {
  opened(): void
  closed(reason: CloseReason): void
  refused(reason: RefuseReason): void
  published(): void
  /** Frames handed to sockets for one published event (or one replay). */
  delivered(count: number): void
  resumed(outcome: ResumeOutcome): void
}

/** The meter's name. */
export const METER_NAME = 'fastify-html-sse'

const noop = (): void => {}

/** Records nothing. */
export const NO_METRICS: Metrics = {
  opened: noop,
  closed: noop,
  refused: noop,
  published: noop,
  delivered: noop,
  resumed: noop
}

/**
 * The parts of `@opentelemetry/api` used here, described structurally so the
 * published declarations name no optional peer: a strict project without the
 * API (`skipLibCheck: false`) still compiles. `loadMetrics` assigns the real
 * module to it, so a change in the API fails this package's own type check.
 */
export interface MetricsApi {
  readonly metrics: {
    getMeter(name: string): {
      createCounter(name: string, options?: { description?: string }): MetricsCounter
      createUpDownCounter(name: string, options?: { description?: string }): MetricsCounter
    }
  }
}

/** A counter of the API: `add` with optional attributes. */
export interface MetricsCounter {
  add(value: number, attributes?: Readonly<Record<string, string>>): void
}

/** One attribute object per value, made once: recording allocates nothing. */
function attributes<K extends string, V extends string>(key: K, values: readonly V[]): Record<V, Record<K, V>> {
  const out = {} as Record<V, Record<K, V>>
  for (const value of values) out[value] = { [key]: value } as Record<K, V>
  return out
}

const REFUSE_REASONS: readonly RefuseReason[] = ['max_connections', 'max_connections_per_client']
const OUTCOMES: readonly ResumeOutcome[] = ['replayed', 'reset', 'unavailable']

/** Instruments on the global MeterProvider's `fastify-html-sse` meter. */
export function meterMetrics(api: MetricsApi): Metrics {
  const meter = api.metrics.getMeter(METER_NAME)
  const open = meter.createUpDownCounter('sse.streams.open', { description: 'Open event streams' })
  const opened = meter.createCounter('sse.streams.opened', { description: 'Event streams opened' })
  const closed = meter.createCounter('sse.streams.closed', { description: 'Event streams closed, by reason' })
  const refused = meter.createCounter('sse.streams.refused', { description: 'Event streams refused, by reason' })
  const published = meter.createCounter('sse.events.published', { description: 'Events published' })
  const delivered = meter.createCounter('sse.events.delivered', { description: 'Frames handed to sockets' })
  const resumes = meter.createCounter('sse.resumes', { description: 'Last-Event-ID resumes, by outcome' })
  const closeAttrs = attributes('reason', CLOSE_REASONS)
  const refuseAttrs = attributes('reason', REFUSE_REASONS)
  const outcomeAttrs = attributes('outcome', OUTCOMES)
  return {
    opened() {
      open.add(1)
      opened.add(1)
    },
    closed(reason) {
      open.add(-1)
      closed.add(1, closeAttrs[reason])
    },
    refused(reason) {
      refused.add(1, refuseAttrs[reason])
    },
    published() {
      published.add(1)
    },
    delivered(count) {
      if (count > 0) delivered.add(count)
    },
    resumed(outcome) {
      resumes.add(1, outcomeAttrs[outcome])
    }
  }
}

/** The instruments, or `NO_METRICS` when `@opentelemetry/api` is not installed. */
export async function loadMetrics(): Promise<Metrics> {
  let api: MetricsApi
  try {
    api = await import('@opentelemetry/api')
  } catch {
    return NO_METRICS
  }
  return meterMetrics(api)
}
