/**
 * Presence: how many streams, and which members, each instance holds per topic.
 *
 * Keys (all under the broker's prefix):
 * - `presence:<topic>`: a hash, one field per instance holding streams of the
 *   topic, its value `{"streams":n,"members":[...]}`. No expiry: a share lives
 *   as long as its instance.
 * - `presence-instances`: a sorted set, one member per instance, its score the
 *   epoch ms (on Redis's clock) until which the instance, and so every share
 *   of it, counts. Every `sharePresence` call renews it: the hub's renewal every
 *   4 s is one call with no topics (the broker has `presenceRenewal`).
 * - `presence-topics:<instance>`: a set of the topics the instance has a share
 *   of, so the shares of an instance that died can be found and removed.
 *
 * An instance that died (SIGKILL, a lost host) stops renewing: its shares stop
 * counting when its score passes. The next renewal of any instance of the
 * prefix that sees it lapsed removes it for good with one `EVAL` (its fields,
 * its topic set, its member; atomic, and only if it is still lapsed then), and
 * a `presence()` read that meets a field of an instance not live deletes that
 * field. Nothing therefore grows with instances coming and going. An instance
 * that was merely slow and is renewed after it lapsed is told so (`ZSCORE`
 * before its `ZADD`): `sharePresence` resolves `false` and the hub shares its
 * topics again.
 *
 * Clock: Redis's, never this host's alone. `presence()` reads Redis `TIME`
 * together with the hash and the instances and compares each score with it;
 * `sharePresence()` writes the score as this host's clock plus the offset to
 * Redis's clock, learnt from the `TIME` that rides in its previous pipeline
 * (and once, before the first share). Two instances whose clocks disagree by
 * seconds therefore still agree on which shares are live: the error is the
 * round trip of the last share, not the skew between hosts.
 *
 * Cost, in Redis commands, flat in the number of streams (the hub counts
 * streams in memory and shares per topic, at most every 200 ms after a change;
 * opening or closing a stream costs nothing by itself):
 * - `sharePresence(instance, shares)`: one round trip, one pipeline: `ZSCORE`
 *   and `ZADD` of the instance, per changed topic `HSET` + `SADD` (or `HDEL` +
 *   `SREM` for a topic it left), then `ZRANGEBYSCORE` (lapsed instances, at
 *   most 4) and `TIME`: 2n + 4 commands for n changed topics. The first call of
 *   a broker sends one `TIME` before it; a lapsed instance found costs one
 *   `EVAL` more, once. A pipeline rather than `MULTI`/`EXEC`: on a client the
 *   app shares with the broker, an `EXEC` of ours would drop the app's `WATCH`es.
 * - The hub's renewal every 4 s: 4 commands, whatever the number of topics
 *   (it was 2T + 1 for T topics when every topic was shared again).
 * - `presence(topic)`: one round trip, `TIME`, `HGETALL` and `ZRANGE
 *   ... WITHSCORES` of the instances (its reply grows with the instances and
 *   the members of the topic); one `HDEL` more, not awaited, when it meets
 *   fields of instances that are not live.
 *
 * Upgrades: a field an earlier version wrote holds its own `until` and `ttl`;
 * it counts while `until` is in the future and is deleted a TTL later, as that
 * version did, so instances of both versions add up during a rolling deploy.
 * An earlier version also set the hash to expire; while one of its instances
 * still shares a topic, the hash may expire with a newer instance's field,
 * which then lacks until that topic changes again.
 *
 * Every command is bounded by `commandTimeoutMs` and fails with
 * `FST_ERR_HTML_SSE_BROKER_UNAVAILABLE`, as publishing does.
 */
import { checkShare } from '../shared/options.js'
import { unavailable } from '../shared/timing.js'
import type { Presence, PresenceShare } from '../types.js'
import type { Connections } from './connection.js'
import type { RedisClient, ResolvedOptions } from './options.js'
import { integer, msOfTime, pairs, scores, text } from './reply.js'

/** Lapsed instances one renewal looks for (each removed by an `EVAL` of its own). */
const SWEEP_LIMIT = 4

/**
 * Removes a lapsed instance: KEYS[1] the instances, KEYS[2] its topic set;
 * ARGV[1] the instance, ARGV[2] the hash prefix, ARGV[3] the time it must have
 * lapsed by. Nothing when it was renewed meanwhile.
 */
const SWEEP = `local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[3]) then return 0 end
for _, topic in ipairs(redis.call('SMEMBERS', KEYS[2])) do redis.call('HDEL', ARGV[2] .. topic, ARGV[1]) end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1`

/** A share an earlier version wrote: it carries its own expiry. */
interface EarlierShare {
  /** Epoch ms on Redis's clock after which the share no longer counts. */
  until: number
  /** The TTL it was shared with: a share lapsed for as long again is deleted. */
  ttl: number
}

/** What one field of a topic's hash holds. */
type StoredShare = PresenceShare & Partial<EarlierShare>

function shareOf(value: unknown): StoredShare | null {
  const json = text(value)
  if (json === undefined) return null
  try {
    const v = JSON.parse(json) as Partial<StoredShare> | null
    if (v === null || typeof v.streams !== 'number' || !Array.isArray(v.members)) return null
    if ((v.until !== undefined || v.ttl !== undefined) && (typeof v.until !== 'number' || typeof v.ttl !== 'number')) {
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
  readonly #instances: string
  readonly #topicsPrefix: string
  /** Redis's clock minus this host's, in ms; null until first measured. */
  #offset: number | null = null

  constructor(conns: Connections, options: ResolvedOptions) {
    this.#conns = conns
    this.#prefix = `${options.prefix}presence:`
    this.#instances = `${options.prefix}presence-instances`
    this.#topicsPrefix = `${options.prefix}presence-topics:`
  }

  /** The hash of `topic`'s shares. */
  #keyOf(topic: string): string {
    return `${this.#prefix}${topic}`
  }

  /** Renews `instance` and replaces its shares of the topics in `shares`; false when it was not live before. */
  async share(instance: string, shares: ReadonlyMap<string, PresenceShare | null>, ttlMs: number): Promise<boolean> {
    checkShare(instance, ttlMs)
    const client = await this.#conns.commands()
    if (this.#offset === null) await this.#measure(client)
    const now = Date.now() + (this.#offset as number)
    const topics = `${this.#topicsPrefix}${instance}`
    const commands: string[][] = [
      ['ZSCORE', this.#instances, instance],
      ['ZADD', this.#instances, String(Math.round(now + ttlMs)), instance]
    ]
    for (const [topic, share] of shares) {
      const key = this.#keyOf(topic)
      if (share === null) {
        commands.push(['HDEL', key, instance], ['SREM', topics, topic])
      } else {
        const stored: PresenceShare = { streams: share.streams, members: share.members }
        commands.push(['HSET', key, instance, JSON.stringify(stored)], ['SADD', topics, topic])
      }
    }
    const lapsedBy = String(Math.floor(now))
    commands.push(['ZRANGEBYSCORE', this.#instances, '-inf', lapsedBy, 'LIMIT', '0', String(SWEEP_LIMIT)], ['TIME'])
    // One pipeline, not a MULTI: on a client the app also uses, EXEC would drop the app's WATCHes.
    const sentAt = Date.now()
    const replies = await this.#conns.sendAll(client, commands)
    const time = replies.at(-1)
    this.#learn(time, sentAt)
    for (const lapsed of Array.isArray(replies.at(-2)) ? (replies.at(-2) as unknown[]) : []) {
      const other = text(lapsed)
      if (other === undefined || other === instance) continue
      const args = [this.#instances, `${this.#topicsPrefix}${other}`, other, this.#prefix, lapsedBy]
      // Housekeeping: a failure here changes no answer, and the next renewal tries again.
      this.#conns.send(client, ['EVAL', SWEEP, '2', ...args]).catch(() => {})
    }
    const before = integer(replies[0])
    return before > msOfTime(time)
  }

  async presence(topic: string): Promise<Presence> {
    const client = await this.#conns.commands()
    const key = this.#keyOf(topic)
    const sentAt = Date.now()
    const [time, all, instances] = await this.#conns.sendAll(client, [
      ['TIME'],
      ['HGETALL', key],
      ['ZRANGE', this.#instances, '0', '-1', 'WITHSCORES']
    ])
    const now = msOfTime(time)
    if (!Number.isFinite(now)) throw unavailable('Redis answered TIME without a time')
    this.#learn(time, sentAt)
    const live = new Set<string>()
    for (const [instance, score] of scores(instances)) if (score > now) live.add(instance)
    let streams = 0
    const members = new Set<string>()
    const stale: string[] = []
    for (const [instance, value] of pairs(all)) {
      const share = shareOf(value)
      if (share === null) continue
      const counts = share.until === undefined ? live.has(instance) : share.until > now
      if (counts) {
        streams += share.streams
        for (const member of share.members) members.add(member)
      } else if (share.until === undefined || share.until + (share.ttl as number) < now) {
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
