/**
 * The options both log brokers take, checked with the package's validators
 * and filled in with the same defaults.
 */
import { FST_ERR_HTML_SSE_OPTION_INVALID } from '../../errors.js'
import { checkInteger, checkReplay, MAX_TIMER_MS } from '../../validate.js'
import type { BrokerLogger } from '../types.js'

/** `replay`, `retentionMs`, `commandTimeoutMs` and `logger`, after defaults. */
export interface LogOptions {
  readonly replay: number
  readonly retentionMs: number
  readonly commandTimeoutMs: number
  readonly logger: BrokerLogger | undefined
}

/** The arguments of `sharePresence` every broker checks: a non-empty instance, a positive whole TTL. */
export function checkShare(instance: unknown, ttlMs: unknown): void {
  if (typeof instance !== 'string' || instance.length === 0) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('instance', 'must be a non-empty string')
  }
  if (!Number.isSafeInteger(ttlMs) || (ttlMs as number) < 1) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('ttlMs', `must be a positive integer, got ${String(ttlMs)}`)
  }
}

/** An optional integer option in ms, from `min` to `max`, else `fallback`. */
export function optionalMs(
  o: Record<string, unknown>,
  name: string,
  min: number,
  max: number,
  fallback: number
): number {
  return o[name] === undefined ? fallback : checkInteger(name, o[name], min, max)
}

/** Checks the shared options; `minRetentionMs` is the smallest `retentionMs` the broker can keep to. */
export function resolveLogOptions(o: Record<string, unknown>, minRetentionMs: number): LogOptions {
  const commandTimeoutMs = optionalMs(o, 'commandTimeoutMs', 1, 600_000, 5000)
  const retentionMs = optionalMs(o, 'retentionMs', minRetentionMs, MAX_TIMER_MS, 60_000)
  if (o.logger !== undefined) {
    const l = o.logger as Record<string, unknown> | null
    if (l === null || typeof l !== 'object' || ['info', 'warn', 'error'].some((m) => typeof l[m] !== 'function')) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('logger', 'must have info(), warn() and error() methods')
    }
  }
  return {
    replay: checkReplay(o.replay ?? 1000),
    retentionMs,
    commandTimeoutMs,
    logger: o.logger as BrokerLogger | undefined
  }
}
