/**
 * Presence: how many streams, and which members, each instance holds per topic.
 *
 * Per topic one hash, `<prefix>presence:<topic>`: one field per instance, its
 * value `{"streams":n,"members":[...],"until":ms,"ttl":ms}`. A share counts
 * while `until` is in the future; the hub shares again every few seconds while
 * it lives, so the shares of an instance that died (SIGKILL, a lost host) lapse
 * by themselves. Every write also sets the hash to expire a little after the
 * TTL, so a topic nobody shares any more leaves Redis entirely.
 *
 * Clock: Redis's, never this host's alone. `presence()` reads Redis `TIME`
 * together with the hash and compares each `until` with it; `sharePresence()`
 * writes `until` as this host's clock plus the offset to Redis's clock, learnt
 * from the `TIME` that rides in its previous pipeline (and once, before the
 * first share). Two instances whose clocks disagree by seconds therefore still
 * agree on which shares are live: the error is the round trip of the last
 * share, not the skew between hosts. (With each host's own clock, an instance
 * whose clock runs 12 s behind would see every other share as lapsed.)
 *
 * Cost, in Redis commands, flat in the number of streams (the hub counts
 * streams in memory and shares per topic, at most every 200 ms after a change
 * and every 4 s for all its topics; opening or closing a stream costs nothing
 * by itself):
 * - `sharePresence(instance, shares)`: one round trip, one pipeline: per
 *   topic `HSET` + `PEXPIRE` (or one `HDEL` for a topic it left), then `TIME`;
 *   at most 2n + 1 commands for n topics. The first call of a broker sends one
 *   `TIME` before it. A pipeline rather than `MULTI`/`EXEC`: on a client the
 *   app shares with the broker, an `EXEC` of ours would drop the app's
 *   `WATCH`es. Without it, a connection lost between an `HSET` and its
 *   `PEXPIRE` may leave a new hash without expiry; its lapsed field is still
 *   ignored, and deleted by the next `presence()` of the topic (below).
 * - The hub's refresh every 4 s shares each topic the instance holds: 2T + 1
 *   commands per 4 s for T topics, in one pipeline; proportional to topics,
 *   never to streams (200 streams on one topic are one `HSET`).
 * - `presence(topic)`: one round trip, `TIME` and `HGETALL` (its reply grows
 *   with the instances sharing the topic and their members). When it meets a share that lapsed a whole TTL ago (an
 *   instance that died while others kept the topic alive), it also sends one
 *   `HDEL` of those fields, without waiting for it. A share is deleted only
 *   that late so that an instance that was merely slow and shares again at
 *   that moment is not erased (it would be back at its next share anyway).
 *
 * Every command is bounded by `commandTimeoutMs` and fails with
 * `FST_ERR_HTML_SSE_BROKER_UNAVAILABLE`, as publishing does.
 */
import { FST_ERR_HTML_SSE_OPTION_INVALID } from '../../errors.js'
import { unavailable } from '../shared/timing.js'
import type { Presence, PresenceShare } from '../types.js'
import type { Connections } from './connection.js'
import type { RedisClient, ResolvedOptions } from './options.js'
import { pairs, text } from './reply.js'

/** The hash of a topic lives this long past the TTL of its newest share. */
const KEY_SLACK_MS = 2000

/** What one field of a topic's hash holds. */
interface StoredShare {
  streams: number
  members: string[]
  /** Epoch ms on Redis's clock after which the share no longer counts. */
  until: number
  /** The TTL it was shared with: a share lapsed for as long again is deleted. */
  ttl: number
}

/** Redis `TIME` as epoch ms. */
function msOfTime(reply: unknown): number {
  if (!Array.isArray(reply)) return Number.NaN
  const seconds = Number(text(reply[0]) ?? reply[0])
  const micros = Number(text(reply[1]) ?? reply[1])
  return seconds * 1000 + Math.floor(micros / 1000)
}

function shareOf(value: unknown): StoredShare | null {
  const json = text(value)
  if (json === undefined) return null
  try {
    const v = JSON.parse(json) as Partial<StoredShare> | null
    if (
      v === null ||
      typeof v.streams !== 'number' ||
      !Array.isArray(v.members) ||
      typeof v.until !== 'number' ||
      typeof v.ttl !== 'number'
    ) {
      return null
    }
    return v as StoredShare
  } catch {
    return null
  }
}

/** Shares and adds up presence for one broker, on its command connection. */
export class PresenceStore {
  readonly #conns: Connections
  readonly #prefix: string
  /** Redis's clock minus this host's, in ms; null until first measured. */
  #offset: number | null = null

  constructor(conns: Connections, options: ResolvedOptions) {
    this.#conns = conns
    this.#prefix = `${options.prefix}presence:`
  }

  /** The hash of `topic`'s shares. */
  keyOf(topic: string): string {
    return `${this.#prefix}${topic}`
  }

  async share(instance: string, shares: ReadonlyMap<string, PresenceShare | null>, ttlMs: number): Promise<void> {
    if (typeof instance !== 'string' || instance.length === 0) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('instance', 'must be a non-empty string')
    }
    if (shares.size === 0) return
    const client = await this.#conns.commands()
    if (this.#offset === null) await this.#measure(client)
    const until = Date.now() + (this.#offset as number) + ttlMs
    const commands: string[][] = []
    for (const [topic, share] of shares) {
      const key = this.keyOf(topic)
      if (share === null) {
        commands.push(['HDEL', key, instance])
        continue
      }
      const stored: StoredShare = { streams: share.streams, members: [...share.members], until, ttl: ttlMs }
      commands.push(['HSET', key, instance, JSON.stringify(stored)], ['PEXPIRE', key, String(ttlMs + KEY_SLACK_MS)])
    }
    commands.push(['TIME'])
    // One pipeline, not a MULTI: on a client the app also uses, EXEC would drop the app's WATCHes.
    const sentAt = Date.now()
    const replies = await this.#conns.sendAll(client, commands)
    this.#learn(replies.at(-1), sentAt)
  }

  async presence(topic: string): Promise<Presence> {
    const client = await this.#conns.commands()
    const key = this.keyOf(topic)
    const sentAt = Date.now()
    const [time, all] = await this.#conns.sendAll(client, [['TIME'], ['HGETALL', key]])
    const now = msOfTime(time)
    if (!Number.isFinite(now)) throw unavailable('Redis answered TIME without a time')
    this.#learn(time, sentAt)
    let streams = 0
    const members = new Set<string>()
    const stale: string[] = []
    for (const [instance, value] of pairs(all)) {
      const share = shareOf(value)
      if (share === null) continue
      if (share.until > now) {
        streams += share.streams
        for (const member of share.members) members.add(member)
      } else if (share.until + share.ttl < now) {
        stale.push(instance)
      }
    }
    if (stale.length > 0) {
      // Housekeeping: a failure here changes no answer, and the next call tries again.
      this.#conns.send(client, ['HDEL', key, ...stale]).catch(() => {})
    }
    return { streams, members: [...members].sort() }
  }

  /** One `TIME` before the first share: where Redis's clock stands against this host's. */
  async #measure(client: RedisClient): Promise<void> {
    const sentAt = Date.now()
    const reply = await this.#conns.send(client, ['TIME'])
    if (!this.#learn(reply, sentAt)) throw unavailable('Redis answered TIME without a time')
  }

  /** Takes a `TIME` reply sent at `sentAt` as Redis's clock at the middle of the round trip. */
  #learn(reply: unknown, sentAt: number): boolean {
    const redisMs = msOfTime(reply)
    if (!Number.isFinite(redisMs)) return false
    this.#offset = redisMs - (sentAt + Date.now()) / 2
    return true
  }
}
