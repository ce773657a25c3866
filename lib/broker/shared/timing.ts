/**
 * Time in the Redis and PostgreSQL brokers: one deadline on an operation, the
 * backoff between attempts, and pauses a loop can be woken from; with the coded
 * error a missed deadline (or any failed broker operation) rejects with.
 */
import { FST_ERR_HTML_SSE_BROKER_UNAVAILABLE } from '../../errors.js'

const RETRY_BASE_MS = 50
const RETRY_MAX_MS = 2000

/** The coded error (`FST_ERR_HTML_SSE_BROKER_UNAVAILABLE`) every failed broker operation rejects with. */
export function unavailable(reason: string, cause?: unknown): Error {
  const err = new FST_ERR_HTML_SSE_BROKER_UNAVAILABLE(reason)
  if (cause !== undefined) err.cause = cause
  return err
}

/** The wait before a retry: 50 ms × 2^`n` up to 2 s; `jitter` adds up to 50 ms so instances do not retry in step. */
export function retryDelay(n: number, jitter = false): number {
  const ms = Math.min(RETRY_BASE_MS * 2 ** n, RETRY_MAX_MS)
  return jitter ? ms + Math.floor(Math.random() * RETRY_BASE_MS) : ms
}

/**
 * Runs `start()` under a deadline of `ms`. Rejects with `unavailable(late())`
 * when it has not settled by then (and calls `onLate`, once: drop what waits),
 * with `failed(err)` when it fails (a synchronous throw included); an outcome
 * after the deadline is ignored.
 */
export function withDeadline<T>(
  start: () => PromiseLike<T>,
  ms: number,
  late: () => string,
  failed: (err: Error) => Error,
  onLate?: () => void
): Promise<T> {
  return new Promise((resolve, reject) => {
    let settled = false
    const timer = setTimeout(() => {
      settled = true
      reject(unavailable(late()))
      onLate?.()
    }, ms)
    let work: Promise<T>
    try {
      // A plain value or a thenable from an app's client is taken as a promise would be.
      work = Promise.resolve(start())
    } catch (err) {
      work = Promise.reject(err)
    }
    work.then(
      (value) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        resolve(value)
      },
      (err: Error) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        try {
          reject(failed(err instanceof Error ? err : new Error(String(err))))
        } catch (wrapping) {
          reject(wrapping)
        }
      }
    )
  })
}

/** Pauses of a loop that `wake()` ends early (a notification, a reconnect, stop). */
export class Pauses {
  readonly #waiting = new Set<() => void>()

  /** Resolves after `ms`, or at the next `wake()`. */
  pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.#waiting.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#waiting.add(done)
    })
  }

  /** Ends every pause now. */
  wake(): void {
    for (const done of [...this.#waiting]) done()
  }
}
