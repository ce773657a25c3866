/**
 * Presence: who holds streams on a topic, across every instance sharing the
 * broker. Each instance counts its own streams and members per topic and
 * shares what changed with the broker (`sharePresence`) within
 * `PRESENCE_FLUSH_MS`, and renews its shares every `PRESENCE_REFRESH_MS`; a
 * share lives `PRESENCE_TTL_MS` past its last renewal, so the shares of an
 * instance that died leave by themselves.
 *
 * The renewal: with a broker that has `presenceRenewal` (Redis, PostgreSQL),
 * every call renews the whole instance, so a renewal is one call with an empty
 * map, whatever the number of topics; when the broker answers `false` (the
 * instance was not live: its shares may be gone), every topic not in that call
 * is shared again at the next flush. With a broker without it, a renewal shares
 * every topic again, as brokers written for the earlier contract expect. The
 * cost is per changed topic and per renewal, never per stream.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Broker, Presence, PresenceShare } from './broker/types.js'

/** Presence changes are shared this long after the first, together. */
const PRESENCE_FLUSH_MS = 200
/** The instance's shares are renewed this often... */
const PRESENCE_REFRESH_MS = 4000
/** ...and a share lives this long: an instance that died leaves presence within it. */
const PRESENCE_TTL_MS = 12_000

export class PresenceBook {
  readonly #broker: Broker
  readonly #log: FastifyBaseLogger
  /** This instance, among those sharing the broker's presence. */
  readonly #instance = randomUUID()
  /** Per topic: how many streams, and how many streams each member has. */
  readonly #topics = new Map<string, { streams: number; members: Map<string, number> }>()
  /** Topics whose presence changed since the last share. */
  readonly #dirty = new Set<string>()
  #flush: NodeJS.Timeout | null = null
  #refresh: NodeJS.Timeout | null = null
  #stopped = false

  constructor(broker: Broker, log: FastifyBaseLogger) {
    this.#broker = broker
    this.#log = log
  }

  /** Whether a call with an empty map renews every share of this instance (`Broker.presenceRenewal`). */
  get #renews(): boolean {
    return this.#broker.presenceRenewal === true
  }

  /** Whether the broker shares presence between instances. */
  get #shared(): boolean {
    return this.#broker.sharePresence !== undefined && this.#broker.presence !== undefined
  }

  /** A stream of `member` (or of none) joined `topic`. */
  joined(topic: string, member: string | null): void {
    let counts = this.#topics.get(topic)
    if (counts === undefined) {
      counts = { streams: 0, members: new Map() }
      this.#topics.set(topic, counts)
    }
    counts.streams++
    if (member !== null) counts.members.set(member, (counts.members.get(member) ?? 0) + 1)
    this.#changed(topic)
  }

  /** A stream of `member` (or of none) left `topic`. */
  left(topic: string, member: string | null): void {
    const counts = this.#topics.get(topic)
    if (counts === undefined) return
    if (--counts.streams === 0) this.#topics.delete(topic)
    else if (member !== null) {
      const left = (counts.members.get(member) ?? 1) - 1
      if (left > 0) counts.members.set(member, left)
      else counts.members.delete(member)
    }
    this.#changed(topic)
  }

  /** `topic`'s presence across every instance (this one only, with a broker that shares none). */
  presence(topic: string): Promise<Presence> {
    if (this.#shared) return (this.#broker.presence as NonNullable<Broker['presence']>).call(this.#broker, topic)
    const share = this.#share(topic)
    return Promise.resolve({ streams: share?.streams ?? 0, members: share === null ? [] : [...share.members] })
  }

  /** At shutdown: stops sharing and takes back this instance's shares. */
  stop(): Promise<void> {
    if (this.#stopped) return Promise.resolve()
    this.#stopped = true
    if (this.#flush !== null) clearTimeout(this.#flush)
    if (this.#refresh !== null) clearInterval(this.#refresh)
    const shares = new Map<string, PresenceShare | null>()
    for (const topic of new Set([...this.#topics.keys(), ...this.#dirty])) shares.set(topic, null)
    this.#dirty.clear()
    return this.#send(shares)
  }

  /** This instance's share of `topic`, or null when it holds no stream of it. */
  #share(topic: string): PresenceShare | null {
    const counts = this.#topics.get(topic)
    if (counts === undefined) return null
    return { streams: counts.streams, members: [...counts.members.keys()].sort() }
  }

  /** Presence of `topic` changed: share it soon, with whatever else changes meanwhile. */
  #changed(topic: string): void {
    if (!this.#shared || this.#stopped) return
    this.#dirty.add(topic)
    if (this.#flush !== null) return
    this.#flush = setTimeout(this.#shareChanged, PRESENCE_FLUSH_MS)
    this.#flush.unref()
    if (this.#refresh === null) {
      this.#refresh = setInterval(this.#shareAll, PRESENCE_REFRESH_MS)
      this.#refresh.unref()
    }
  }

  readonly #shareChanged = (): void => {
    this.#flush = null
    void this.#send(this.#takeChanged())
  }

  /** The shares of the topics that changed (or whose last share failed), now taken. */
  #takeChanged(): Map<string, PresenceShare | null> {
    const shares = new Map<string, PresenceShare | null>()
    for (const topic of this.#dirty) shares.set(topic, this.#share(topic))
    this.#dirty.clear()
    return shares
  }

  /**
   * Renews this instance's shares, so they outlive their TTL while it lives:
   * one empty call with a broker that renews the instance, else every topic again.
   */
  readonly #shareAll = (): void => {
    if (this.#renews) {
      // Topics whose last share failed go along; nothing held: nothing to keep alive.
      const shares = this.#takeChanged()
      if (this.#topics.size > 0 || shares.size > 0) void this.#send(shares, true)
      return
    }
    const shares = new Map<string, PresenceShare | null>()
    for (const topic of this.#topics.keys()) shares.set(topic, this.#share(topic))
    void this.#send(shares)
  }

  /** Shares `shares` (a `renewal` even when empty). */
  #send(shares: Map<string, PresenceShare | null>, renewal = false): Promise<void> {
    const share = this.#broker.sharePresence
    if (share === undefined || (shares.size === 0 && !renewal)) return Promise.resolve()
    return share.call(this.#broker, this.#instance, shares, PRESENCE_TTL_MS).then(
      (live) => {
        // The instance had lapsed: its earlier shares may be gone; share what this call did not carry.
        if (live !== false || !this.#renews || this.#stopped) return
        for (const topic of this.#topics.keys()) if (!shares.has(topic)) this.#changed(topic)
      },
      (err: unknown) => {
        // Shared again at the next change or refresh; until then presence lags.
        if (!this.#stopped) for (const topic of shares.keys()) this.#dirty.add(topic)
        this.#log.warn({ err }, 'fastify-html-sse: presence could not be shared; it is tried again')
      }
    )
  }
}
