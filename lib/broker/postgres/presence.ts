/**
 * Presence: how many streams, and which members, each instance holds per topic.
 *
 * One row per topic and instance in `<table>_presence` (`streams`, `members`
 * as a JSON array), and one row per instance in `<table>_presence_live`
 * (`expires_at`). Every `sharePresence` call renews the instance's row, so a
 * share counts as long as its instance is renewed: the hub's renewal every 4 s
 * is one call with no topics (the broker has `presenceRenewal`), not every
 * topic again. The rows of an instance that died (SIGKILL, a lost host) stop
 * counting when its renewal lapses, and are deleted by a later sweep (below).
 * The statement returns whether the instance was live before it: when not
 * (its first call, or it lapsed and may have been swept), `sharePresence`
 * resolves `false` and the hub shares every topic again.
 *
 * Clock: the database's alone. `expires_at` is written as `now() + ttl` and
 * compared with `now()`, so hosts whose clocks disagree still agree on which
 * shares are live.
 *
 * Cost, in queries, flat in the number of streams (the hub counts streams in
 * memory and shares per topic, at most every 200 ms after a change; opening or
 * closing a stream costs nothing by itself):
 * - `sharePresence(instance, shares)`: one statement on a pool connection,
 *   whatever the number of topics: it renews the instance (one row), upserts
 *   the rows of the topics it holds and deletes those of the topics it left
 *   (one row written per changed topic). At most once a minute per broker the
 *   same statement also deletes the instances that lapsed a whole TTL ago and
 *   their rows (a seq scan of the presence tables, skipping rows locked now,
 *   so it never waits nor deadlocks).
 * - The hub's renewal every 4 s: one statement writing one row, whatever the
 *   number of topics (it was T rows for T topics when every topic was shared again).
 * - `presence(topic)`: one query, two lookups of the topic's rows by primary
 *   key, each joined with their instances' rows (the sum of streams, the
 *   distinct members); its reply grows with the distinct members, never with
 *   the streams.
 *
 * Upgrades: a row an earlier version wrote has no instance row; it counts
 * while its own `expires_at` is in the future, as that version judged, so
 * instances of both versions add up during a rolling deploy. (This version
 * still writes `expires_at` on each changed row; it is not renewed.)
 *
 * Each is bounded by `commandTimeoutMs` and fails with
 * `FST_ERR_HTML_SSE_BROKER_UNAVAILABLE`, as publishing does.
 *
 * PostgreSQL text cannot hold NUL: members are stored escaped (`\` as `\\`,
 * NUL as `\0`), a one-to-one mapping, so distinct stays distinct.
 */
import { checkShare } from '../shared/options.js'
import type { Presence, PresenceShare } from '../types.js'
import type { Database } from './connection.js'
import type { Statements } from './schema.js'

/** Other instances' long-lapsed rows are swept at most this often by one broker. */
const SWEEP_EVERY_MS = 60_000

const ESCAPED = /[\\\0]/
const encode = (member: string): string =>
  ESCAPED.test(member) ? member.replace(/[\\\0]/g, (c) => (c === '\\' ? '\\\\' : '\\0')) : member
const decode = (stored: string): string =>
  stored.includes('\\') ? stored.replace(/\\(.)/gs, (_, c: string) => (c === '0' ? '\0' : c)) : stored

/** Shares and adds up presence for one broker, on its pool. */
export class PresenceTable {
  readonly #db: Database
  readonly #sql: Statements
  /** When the last sweep went out (performance.now()); the first share of a broker sweeps. */
  #lastSweep = Number.NEGATIVE_INFINITY

  constructor(db: Database, sql: Statements) {
    this.#db = db
    this.#sql = sql
  }

  /** Renews `instance` and replaces its shares of the topics in `shares`; false when it was not live before. */
  async share(instance: string, shares: ReadonlyMap<string, PresenceShare | null>, ttlMs: number): Promise<boolean> {
    checkShare(instance, ttlMs)
    const rows: Array<{ topic: string; streams: number | null; members: string[] | null }> = []
    for (const [topic, share] of shares) {
      rows.push(
        share === null
          ? { topic, streams: null, members: null }
          : { topic, streams: share.streams, members: share.members.map(encode) }
      )
    }
    const now = performance.now()
    const sweep = now - this.#lastSweep >= SWEEP_EVERY_MS
    if (sweep) this.#lastSweep = now
    const reply = await this.#db.query(this.#sql.share, [instance, JSON.stringify(rows), ttlMs, sweep])
    return (reply.rows[0] as { live?: boolean } | undefined)?.live === true
  }

  async presence(topic: string): Promise<Presence> {
    const row = (await this.#db.query(this.#sql.presence, [topic])).rows[0] as
      | { streams: string; members: string[] }
      | undefined
    return {
      streams: Number(row?.streams ?? 0),
      // Sorted here, as the other brokers sort (UTF-16 code units), not by the database's collation.
      members: (row?.members ?? []).map(decode).sort()
    }
  }
}
