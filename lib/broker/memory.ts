/**
 * The in-process broker: a ring of the last `replay` events and one sequence.
 * Ids are `<epoch>-<n>`: `epoch` is the time the broker was made, so an id from
 * before a restart is never mistaken for one of this run.
 */
import { FST_ERR_HTML_SSE_BROKER_UNAVAILABLE } from '../errors.js'
import { checkName, checkReplay } from '../validate.js'

import type {
  Broker,
  BrokerEvent,
  BrokerListener,
  BrokerPublishOptions,
  BrokerReplay,
  Presence,
  PresenceShare
} from './types.js'
import { brokerEvent, parseId } from './types.js'

/** Options of `memoryBroker`. */
export interface MemoryBrokerOptions {
  /** How many recent events to keep for `Last-Event-ID` resume; 0 keeps none. @default 1000 */
  replay?: number | undefined
}

class MemoryBroker implements Broker {
  readonly #epoch = Date.now()
  readonly #size: number
  readonly #ring: BrokerEvent[] = []
  readonly #listeners = new Set<BrokerListener>()
  /** Topic -> instance -> its share and when that lapses. */
  readonly #presence = new Map<string, Map<string, { share: PresenceShare; until: number }>>()
  #seq = 0
  #closed = false

  constructor(replay: number) {
    this.#size = replay
  }

  publish(topic: string, body: string, options?: BrokerPublishOptions): Promise<string> {
    if (this.#closed) return Promise.reject(new FST_ERR_HTML_SSE_BROKER_UNAVAILABLE('it is closed'))
    const key = options?.key
    // Checked as the Redis and PostgreSQL brokers check it, for a caller that is not the plugin.
    if (key !== undefined) {
      try {
        checkName('key', key)
      } catch (err) {
        return Promise.reject(err)
      }
    }
    const n = ++this.#seq
    const id = `${this.#epoch}-${n}`
    const event = brokerEvent(id, topic, body, key)
    if (this.#size > 0) this.#ring[(n - 1) % this.#size] = event
    for (const listener of this.#listeners) listener(event)
    return Promise.resolve(id)
  }

  replay(topics: readonly string[], lastId: string): Promise<BrokerReplay> {
    const head = `${this.#epoch}-${this.#seq}`
    const parsed = parseId(lastId)
    const oldest = Math.max(1, this.#seq - Math.min(this.#seq, this.#size) + 1)
    if (parsed === null || parsed[0] !== this.#epoch || parsed[1] > this.#seq || parsed[1] < oldest - 1) {
      return Promise.resolve({ found: false, head })
    }
    const events: BrokerEvent[] = []
    const wanted = new Set(topics)
    for (let n = parsed[1] + 1; n <= this.#seq; n++) {
      const event = this.#ring[(n - 1) % this.#size] as BrokerEvent
      if (wanted.has(event.topic)) events.push(event)
    }
    return Promise.resolve({ found: true, events })
  }

  /** The newest id; `<epoch>-0` for an empty log: the position before the first event. */
  lastId(): Promise<string> {
    return Promise.resolve(`${this.#epoch}-${this.#seq}`)
  }

  sharePresence(instance: string, shares: ReadonlyMap<string, PresenceShare | null>, ttlMs: number): Promise<void> {
    const until = Date.now() + ttlMs
    for (const [topic, share] of shares) {
      let instances = this.#presence.get(topic)
      if (share === null) {
        instances?.delete(instance)
        if (instances?.size === 0) this.#presence.delete(topic)
        continue
      }
      if (instances === undefined) {
        instances = new Map()
        this.#presence.set(topic, instances)
      }
      instances.set(instance, { share, until })
    }
    return Promise.resolve()
  }

  presence(topic: string): Promise<Presence> {
    const now = Date.now()
    let streams = 0
    const members = new Set<string>()
    for (const [instance, { share, until }] of this.#presence.get(topic) ?? []) {
      if (until <= now) {
        this.#presence.get(topic)?.delete(instance)
        continue
      }
      streams += share.streams
      for (const member of share.members) members.add(member)
    }
    return Promise.resolve({ streams, members: [...members].sort() })
  }

  listen(listener: BrokerListener): Promise<void> {
    this.#listeners.add(listener)
    return Promise.resolve()
  }

  unlisten(listener: BrokerListener): Promise<void> {
    this.#listeners.delete(listener)
    return Promise.resolve()
  }

  close(): Promise<void> {
    this.#closed = true
    this.#listeners.clear()
    return Promise.resolve()
  }
}

/**
 * The default broker: one process, events kept in memory.
 *
 * @example
 * ```ts
 * await app.register(htmlSse, { broker: memoryBroker({ replay: 5000 }) })
 * ```
 */
export function memoryBroker(options: MemoryBrokerOptions = {}): Broker {
  return new MemoryBroker(checkReplay(options.replay ?? 1000))
}
