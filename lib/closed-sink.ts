/** The sink of a stream that never opened: a refused, HEAD or abandoned request. */
import type { SseSink } from './types.js'

const NOT_SENT = Promise.resolve(false)

/** A sink that is closed from the start: `send` resolves false, `signal` is aborted. */
export class ClosedSink implements SseSink {
  readonly lastEventId: string | null
  readonly closed: Promise<void> = Promise.resolve()
  #signal: AbortSignal | null = null

  constructor(lastEventId: string | null) {
    this.lastEventId = lastEventId
  }

  get signal(): AbortSignal {
    if (this.#signal === null) this.#signal = AbortSignal.abort()
    return this.#signal
  }

  send(): Promise<boolean> {
    return NOT_SENT
  }

  comment(): Promise<boolean> {
    return NOT_SENT
  }

  subscribe(): void {}

  unsubscribe(): void {}

  close(): void {}
}
