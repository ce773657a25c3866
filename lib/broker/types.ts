/**
 * The contract every broker implements: one ordered log of events that serves
 * both live delivery and replay.
 *
 * - `publish(topic, body)` appends an event to the log. `body` is a complete SSE
 *   frame without its `id:` line; the broker assigns the id and stores the frame
 *   with it, so it is built once per publish.
 * - Ids come from ONE increasing sequence across all topics. They are strings
 *   `<a>-<b>` of two non-negative integers, ordered by `a` then `b`
 *   (`compareIds`), as Redis Streams ids are. A sink on several topics therefore
 *   resumes exactly from one `Last-Event-ID`.
 * - `listen(listener, onGap?)` delivers every event appended from then on, of
 *   every topic, once, in id order, on every instance that shares the broker.
 *   A listener returns `false` when some socket it wrote to is over its
 *   high-water mark: a broker delivering a batch then yields to I/O
 *   (`setImmediate`) before the next event, the same pacing as local publishes,
 *   so a client that keeps reading is never shed by a burst.
 * - When a broker can no longer deliver every event in order (an instance
 *   stalled and the log was trimmed past its position), it calls `onGap(head)`
 *   instead of skipping silently, then goes on with the events after `head`
 *   (the newest id it knows). The hub sends its streams a `reset` carrying
 *   `head`, so pages refetch their state and nothing is lost unseen.
 * - `lastId()` is the newest id of the log: a page takes `lastId()`, then
 *   renders its state, and its stream resumes from there. For an empty log it is an id
 *   before the first event (`<epoch>-0`, `0-0`), from which a replay returns
 *   every event published since, so the first events cannot fall into the
 *   render-to-connect gap either. A broker that has no such id returns null.
 * - `replay(topics, lastId)` returns the events of `topics` after `lastId`, in
 *   order, when `lastId` is still in the log (or is the newest id); otherwise it
 *   says the id was not found and gives the newest id, so the caller can send a
 *   `reset`. It never returns an event this instance has not yet delivered to
 *   its listeners (events after that reach the stream live, through the hub's
 *   handoff), and the hub drops held live events up to the replay's last id or
 *   `lastId`, whichever is newer: neither a gap nor a duplicate can follow.
 * - `close()` stops delivery and releases what the broker created (never what it
 *   was given).
 * - Keys: `publish(topic, body, { key })` stores the key with the event and
 *   gives it back on the event, live and in replays (`BrokerEvent.key`). The
 *   hub drops superseded keyed events from a replay; a broker may also drop them
 *   from its log early, never the newest of a key.
 * - Control entries: events of the topic `CONTROL_TOPIC` (the empty string,
 *   never a user topic) carry messages between instances (`disconnect()`).
 *   A broker stores and delivers them like any other event; replays never
 *   return them, since no stream subscribes to that topic.
 * - Presence (optional, `sharePresence` and `presence` together): each instance
 *   shares, per topic, how many streams and which members it holds; a share
 *   lives `ttlMs` unless shared again, so a dead instance's shares leave by
 *   themselves. `presence(topic)` adds up the live shares of every instance.
 *   The hub shares what changed within 200 ms and renews every 4 s: a broker
 *   without `presenceRenewal` gets every topic the instance holds again at each
 *   renewal; one with `presenceRenewal: true` gets an empty map, because with
 *   it every `sharePresence` call (an empty map included) renews ALL of the
 *   instance's shares for `ttlMs`: a share lives as long as its instance is
 *   renewed, until replaced or withdrawn (null). Such a broker resolves
 *   `sharePresence` to `false` when the instance was not live before the call
 *   (its first call, or it was not renewed within `ttlMs`, so its earlier
 *   shares may have been removed): the hub then shares every topic it holds
 *   again. A renewal thus costs the same for 1 topic or 10,000.
 */

/** The topic of control entries: the empty string, which no stream can subscribe to. */
export const CONTROL_TOPIC = ''

/** One event of the log. */
export interface BrokerEvent {
  /** Its place in the broker's sequence. */
  readonly id: string
  /** The topic it was published to. */
  readonly topic: string
  /** The complete frame, `id:` line included, as sent to every subscriber. */
  readonly frame: Buffer
  /** A keyed event's key: a later event with the same key on the topic supersedes it for resumes. */
  readonly key?: string | undefined
}

/** One instance's share of a topic's presence. */
export interface PresenceShare {
  /** Open streams on the topic. */
  readonly streams: number
  /** The distinct members among them, sorted. */
  readonly members: readonly string[]
}

/** A topic's presence across every instance sharing the broker. */
export interface Presence {
  /** Open streams on the topic. */
  streams: number
  /** The distinct members among them, sorted; streams without a member count in `streams` only. */
  members: string[]
}

/** What `replay` found. */
export type BrokerReplay =
  | { readonly found: true; readonly events: readonly BrokerEvent[] }
  | { readonly found: false; readonly head: string | null }

/** Where a broker reports outages and recoveries: a Fastify / pino logger fits. */
export interface BrokerLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

/**
 * Receives live events in id order. Returns `false` when a socket is over its
 * high-water mark: the broker yields to I/O before delivering the next event.
 */
export type BrokerListener = (event: BrokerEvent) => unknown

/** Told that events were skipped: `head` is the newest id; delivery goes on after it. */
export type BrokerGapListener = (head: string | null) => void

/**
 * A database client inside a transaction the app opened (a `pg` `PoolClient`
 * after `BEGIN`, say). Typed structurally, so the main entry needs no driver types.
 */
export interface TransactionClient {
  query: (...args: never[]) => unknown
}

/** What `app.sse.publish()` hands the broker besides the frame. */
export interface BrokerPublishOptions {
  /**
   * Write the event inside this transaction: it reaches streams iff the
   * transaction commits. Only a broker with `transactional: true` takes it.
   */
  transaction?: TransactionClient | undefined
  /** A keyed event: it supersedes the earlier events with this key on its topic for resumes. */
  key?: string | undefined
}

/** What `app.sse.lastId()` hands the broker. */
export interface BrokerLastIdOptions {
  /** The resume point that matches what this transaction sees (a REPEATABLE READ render). */
  transaction?: TransactionClient | undefined
}

/** A broker: where published events travel. See the module comment for the rules. */
export interface Broker {
  /**
   * True when `publish` and `lastId` honour `options.transaction`; the plugin
   * refuses a transaction with `FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED` otherwise.
   */
  readonly transactional?: boolean
  /** Appends an event; resolves to its id once it is in the log (for a transaction: once written in it). */
  publish(topic: string, body: string, options?: BrokerPublishOptions): Promise<string>
  /**
   * The events of `topics` after `lastId`, or `found: false` when `lastId` is
   * unknown or expired. Rejects with `FST_ERR_HTML_SSE_BROKER_UNAVAILABLE` when
   * the backend cannot answer (the hub then keeps the client's position: it ends
   * the stream so the browser comes back with the same id, never a `reset`).
   */
  replay(topics: readonly string[], lastId: string): Promise<BrokerReplay>
  /** The newest id in the log; for an empty log, an id before the first event (or null). Rejects with `FST_ERR_HTML_SSE_BROKER_UNAVAILABLE` when it cannot tell. */
  lastId(options?: BrokerLastIdOptions): Promise<string | null>
  /** Starts delivering live events to `listener`; `onGap` is told when events had to be skipped. */
  listen(listener: BrokerListener, onGap?: BrokerGapListener): Promise<void>
  /** Stops delivering to `listener`. */
  unlisten(listener: BrokerListener): Promise<void>
  /** Stops delivery and releases what the broker created. Idempotent. */
  close(): Promise<void>
  /**
   * Optional, with `sharePresence`: true when every `sharePresence` call (an
   * empty map included) renews ALL of the instance's shares for `ttlMs`, so the
   * hub renews with an empty map instead of sharing every topic again. Such a
   * broker resolves `sharePresence` to `false` when the instance was not live
   * before the call (its shares may be gone): the hub then shares them all again.
   */
  readonly presenceRenewal?: boolean
  /**
   * Optional, with `presence`: replaces this instance's shares of the topics in
   * `shares` (null: none left), each living `ttlMs` unless shared again (with
   * `presenceRenewal`: unless the instance is renewed by any call).
   */
  sharePresence?(
    instance: string,
    shares: ReadonlyMap<string, PresenceShare | null>,
    ttlMs: number
    // biome-ignore lint/suspicious/noConfusingVoidType: a broker written for the earlier Promise<void> must still fit
  ): Promise<void | boolean>
  /** Optional, with `sharePresence`: the live shares of `topic` of every instance, added up. */
  presence?(topic: string): Promise<Presence>
  /** Optional: the plugin hands over the app's logger before `listen`, unless the broker has one. */
  useLogger?(logger: BrokerLogger): void
}

const ID = /^(0|[1-9]\d{0,15})-(0|[1-9]\d{0,15})$/

/** Parses an id of the `<a>-<b>` form, or returns null for anything else. */
export function parseId(id: string): [number, number] | null {
  const m = ID.exec(id)
  if (m === null) return null
  const a = Number(m[1])
  const b = Number(m[2])
  return Number.isSafeInteger(a) && Number.isSafeInteger(b) ? [a, b] : null
}

/** Orders two well-formed ids: negative when `a` comes first. */
export function compareIds(a: string, b: string): number {
  const i = a.indexOf('-')
  const j = b.indexOf('-')
  const d = Number(a.slice(0, i)) - Number(b.slice(0, j))
  return d !== 0 ? d : Number(a.slice(i + 1)) - Number(b.slice(j + 1))
}

/** Builds the stored frame: the id line, then the body. */
export function withId(id: string, body: string): Buffer {
  return Buffer.from(`id: ${id}\n${body}`)
}

/** An event as a broker hands it over: its frame built once (`withId`), a `key` field only when it has one. */
export function brokerEvent(id: string, topic: string, body: string, key?: string | null): BrokerEvent {
  const frame = withId(id, body)
  return key == null ? { id, topic, frame } : { id, topic, frame, key }
}
