/**
 * Presence: how many streams, and which members, each instance holds per topic.
 *
 * One row per topic and instance in `<table>_presence`: `streams`, `members`
 * (a JSON array) and `expires_at`. A share counts while `expires_at` is in the
 * future; the hub shares again every few seconds while it lives, so the rows
 * of an instance that died (SIGKILL, a lost host) lapse by themselves.
 *
 * Clock: the database's alone. `expires_at` is written as `now() + ttl` and
 * compared with `now()`, so hosts whose clocks disagree still agree on which
 * shares are live.
 *
 * Cost, in queries, flat in the number of streams (the hub counts streams in
 * memory and shares per topic, at most every 200 ms after a change and every
 * 4 s for all its topics; opening or closing a stream costs nothing by itself):
 * - `sharePresence(instance, shares)`: one statement on a pool connection,
 *   whatever the number of topics: it upserts the rows of the topics it holds
 *   and deletes those of the topics it left (one row written per topic). At
 *   most once a minute per broker the same statement also deletes other
 *   instances' rows that lapsed a whole TTL ago (a seq scan of the presence
 *   table, skipping rows locked now, so it never waits nor deadlocks).
 * - The hub's refresh every 4 s: one statement for all T topics of the
 *   instance, T rows written; 200 streams on one topic are one row.
 * - `presence(topic)`: one query, two lookups of the topic's rows by primary
 *   key (the sum of streams, the distinct members); its reply grows with the
 *   distinct members, never with the streams.
 *
 * Each is bounded by `commandTimeoutMs` and fails with
 * `FST_ERR_HTML_SSE_BROKER_UNAVAILABLE`, as publishing does.
 *
 * PostgreSQL text cannot hold NUL: members are stored escaped (`\` as `\\`,
 * NUL as `\0`), a one-to-one mapping, so distinct stays distinct.
 */
import { FST_ERR_HTML_SSE_OPTION_INVALID } from '../../errors.js'
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

  async share(instance: string, shares: ReadonlyMap<string, PresenceShare | null>, ttlMs: number): Promise<void> {
    if (typeof instance !== 'string' || instance.length === 0) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('instance', 'must be a non-empty string')
    }
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('ttlMs', `must be a positive integer, got ${String(ttlMs)}`)
    }
    if (shares.size === 0) return
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
    await this.#db.query(this.#sql.share, [instance, JSON.stringify(rows), ttlMs, sweep])
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
