/**
 * Every check of what the app hands the plugin: one place, each throwing a
 * coded error (`FST_ERR_HTML_SSE_*`) that names what was wrong.
 */
import type { Broker, TransactionClient } from './broker/types.js'
import {
  FST_ERR_HTML_SSE_OPTION_INVALID,
  FST_ERR_HTML_SSE_TOPIC_INVALID,
  FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED
} from './errors.js'

/** The longest delay a Node timer takes. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** A short, safe description of a value for error messages (never its content). */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object' ? `an object (${Object.prototype.toString.call(value)})` : typeof value
}

/** True for a promise or any thenable. */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value != null && typeof (value as { then?: unknown }).then === 'function'
}

/** True for a safe integer from `min` to `max`. */
export function isIntegerIn(value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): value is number {
  return Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max
}

/** Option `name` as an integer from `min` to `max`. */
export function checkInteger(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!isIntegerIn(value, min, max)) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID(name, `must be an integer from ${min} to ${max}, got ${String(value)}`)
  }
  return value
}

/** A delay in ms a timer can take: 0 to about 24.8 days. */
export function checkMs(name: string, value: unknown): number {
  return checkInteger(name, value, 0, MAX_TIMER_MS)
}

/** A `replay` option: how many events a broker keeps, 0 for none. */
export function checkReplay(replay: unknown): number {
  return checkInteger('replay', replay, 0)
}

/** A limit: a positive integer, or unlimited (`undefined` or `Infinity`). */
export function checkLimit(name: string, value: unknown): number {
  return value === undefined || value === Number.POSITIVE_INFINITY
    ? Number.POSITIVE_INFINITY
    : checkInteger(name, value, 1)
}

/** A UTF-16 surrogate without its pair: such a string has no UTF-8 form (Redis would store U+FFFD). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Throws unless `topic` is a non-empty, well-formed string. */
export function checkTopic(topic: unknown): asserts topic is string {
  if (typeof topic !== 'string' || topic.length === 0) {
    throw new FST_ERR_HTML_SSE_TOPIC_INVALID(typeof topic === 'string' ? 'an empty string' : describe(topic))
  }
  if (LONE_SURROGATE.test(topic)) throw new FST_ERR_HTML_SSE_TOPIC_INVALID('a string with a lone surrogate')
}

/** Throws unless `value` (option `name`: a member, a key) is a non-empty, well-formed string. */
export function checkName(name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID(
      name,
      `must be a non-empty string, got ${typeof value === 'string' ? 'an empty string' : describe(value)}`
    )
  }
  if (LONE_SURROGATE.test(value)) throw new FST_ERR_HTML_SSE_OPTION_INVALID(name, 'must not hold a lone surrogate')
}

/** A list of topics: an array of topic names. */
export function checkTopics(topics: unknown): readonly string[] {
  if (!Array.isArray(topics)) throw new FST_ERR_HTML_SSE_OPTION_INVALID('topics', 'must be an array of topic names')
  for (const topic of topics) checkTopic(topic)
  return topics
}

/** An `expiresAt` option as epoch ms (never 0, which means "none"): a valid `Date` or a non-negative safe integer. */
export function checkExpiresAt(value: unknown): number {
  const ms = value instanceof Date ? value.getTime() : value
  if (!isIntegerIn(ms, 0)) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('expiresAt', `must be a valid Date or epoch ms, got ${describe(value)}`)
  }
  return ms === 0 ? 1 : ms
}

const BROKER_METHODS = ['publish', 'replay', 'lastId', 'listen', 'unlisten', 'close'] as const

/** A `broker` option: an object with the methods of the Broker contract. */
export function checkBroker(broker: unknown): Broker {
  const b = broker as Record<string, unknown> | null
  for (const method of BROKER_METHODS) {
    if (b === null || typeof b !== 'object' || typeof b[method] !== 'function') {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('broker', `must implement the Broker contract (missing ${method}())`)
    }
  }
  return b as unknown as Broker
}

/** A `transaction` option: undefined, or a client for a broker that takes one. */
export function checkTransaction(broker: Broker, transaction: unknown): TransactionClient | undefined {
  if (transaction === undefined) return undefined
  if (broker.transactional !== true) {
    throw new FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED(
      'this broker cannot publish inside a transaction (only postgresBroker can); publish after the commit, or use fastify-html-sse/postgres'
    )
  }
  const query = (transaction as { query?: unknown } | null)?.query
  if (transaction === null || typeof transaction !== 'object' || typeof query !== 'function') {
    throw new FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED(
      `options.transaction must be a database client inside an open transaction, got ${describe(transaction)}`
    )
  }
  return transaction as TransactionClient
}
