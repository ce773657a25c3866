/**
 * The listeners of one broker's reader (the hubs of the apps on this
 * instance) and the pace at which the reader hands them events: it yields to
 * I/O every 64 events, and at once when a listener says its sockets are full,
 * so a large batch never starves the sockets it writes to.
 */
import type { BrokerEvent, BrokerGapListener, BrokerListener, BrokerLogger } from '../types.js'

/** Events delivered without yielding to I/O at most, even when every socket keeps up. */
const YIELD_EVERY = 64

const tick = () => new Promise<void>((resolve) => setImmediate(resolve))

/** Who gets what a reader reads; a listener that throws is logged and the others still get the event. */
export class Listeners {
  readonly #listeners = new Map<BrokerListener, BrokerGapListener | undefined>()
  readonly #log: () => BrokerLogger

  constructor(log: () => BrokerLogger) {
    this.#log = log
  }

  add(listener: BrokerListener, onGap: BrokerGapListener | undefined): void {
    this.#listeners.set(listener, onGap)
  }

  remove(listener: BrokerListener): void {
    this.#listeners.delete(listener)
  }

  clear(): void {
    this.#listeners.clear()
  }

  /**
   * Hands `items` to every listener in order, each made an event by `take`
   * (which also moves the reader's position; `undefined` passes an item over),
   * until `stopped()`.
   */
  async deliver<T>(
    items: Iterable<T>,
    take: (item: T) => BrokerEvent | undefined,
    stopped: () => boolean
  ): Promise<void> {
    let sinceYield = 0
    for (const item of items) {
      if (stopped()) return
      const event = take(item)
      if (event === undefined) continue
      let flowing = true
      for (const listener of this.#listeners.keys()) {
        try {
          if (listener(event) === false) flowing = false
        } catch (err) {
          this.#log().error({ err }, 'fastify-html-sse: a broker listener threw')
        }
      }
      if (!flowing || ++sinceYield >= YIELD_EVERY) {
        sinceYield = 0
        await tick()
      }
    }
  }

  /** Events after the listeners' position are gone: each `onGap` gets the id delivery goes on after. */
  gap(head: string): void {
    for (const onGap of this.#listeners.values()) {
      try {
        onGap?.(head)
      } catch (err) {
        this.#log().error({ err }, 'fastify-html-sse: a broker gap listener threw')
      }
    }
  }
}
