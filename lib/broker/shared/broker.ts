/**
 * What the Redis and PostgreSQL brokers share around their parts: the logger
 * (the `logger` option, else the plugin's, else process warnings), the
 * listeners, starting the reader once at the first `listen` (again at the
 * next after a failed start), and closing once.
 */
import type { BrokerGapListener, BrokerListener, BrokerLogger } from '../types.js'
import { Listeners } from './listeners.js'
import { unavailable } from './timing.js'

/** A promise made at first use and shared; made again at the next use once it failed, or after `reset()`. */
export class Once<T = void> {
  readonly #make: () => Promise<T>
  #promise: Promise<T> | null = null

  constructor(make: () => Promise<T>) {
    this.#make = make
  }

  get(): Promise<T> {
    if (this.#promise === null) {
      const made = this.#make()
      this.#promise = made
      made.catch(() => {
        if (this.#promise === made) this.#promise = null
      })
    }
    return this.#promise
  }

  /** The next `get()` makes it again. */
  reset(): void {
    this.#promise = null
  }
}

function warningLogger(code: string): BrokerLogger {
  const warn = (obj: object, msg: string) => {
    const err = (obj as { err?: unknown }).err
    process.emitWarning(msg, { code, detail: err instanceof Error ? err.message : '' })
  }
  return { info() {}, warn, error: warn }
}

/** The lifecycle of a broker whose events are one log read by one reader per instance. */
export abstract class LogBroker {
  /** The hubs listening on this instance; the reader hands them what it reads. */
  protected readonly listeners: Listeners
  readonly #configured: boolean
  #logger: BrokerLogger
  readonly #started = new Once(() => this.start())
  #closing: Promise<void> | null = null

  /** `logger` is the option (kept when given); `warningCode` names the process warnings used without one. */
  constructor(logger: BrokerLogger | undefined, warningCode: string) {
    this.#configured = logger !== undefined
    this.#logger = logger ?? warningLogger(warningCode)
    this.listeners = new Listeners(() => this.#logger)
  }

  /** Where the broker's parts report: read at each report, so `useLogger` reaches them. */
  protected readonly logger = (): BrokerLogger => this.#logger

  /** Reports outages to `logger` unless the `logger` option was given (the plugin calls this with `app.log`). */
  useLogger(logger: BrokerLogger): void {
    if (!this.#configured) this.#logger = logger
  }

  /** Throws the coded error once `close()` was called. */
  protected checkOpen(): void {
    if (this.#closing !== null) throw unavailable('it is closed')
  }

  /** Starts the reader (and what publishing needs): run by the first `listen`. */
  protected abstract start(): Promise<void>

  /** Stops the reader and closes what the broker made. */
  protected abstract shutdown(): Promise<void>

  async listen(listener: BrokerListener, onGap?: BrokerGapListener): Promise<void> {
    this.checkOpen()
    await this.#started.get()
    this.listeners.add(listener, onGap)
  }

  unlisten(listener: BrokerListener): Promise<void> {
    this.listeners.remove(listener)
    return Promise.resolve()
  }

  close(): Promise<void> {
    if (this.#closing === null) {
      this.listeners.clear()
      this.#closing = this.shutdown()
    }
    return this.#closing
  }
}
