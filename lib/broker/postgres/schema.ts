/**
 * The tables and the statements. One table holds the log: `id` from a
 * sequence, `topic`, `body` (the frame without its id line), `key` (a keyed
 * event's key, else null) and `at` (the database's clock, for retention).
 * `<table>_meta` holds one row: `epoch` (the table's creation time, the `<a>`
 * of every id, so an id of a recreated table is never taken for one of this
 * table) and `trimmed` (the newest id retention ever removed: a reader whose
 * position is older than it may have missed events).
 *
 * The order. Sequence values are handed out at insert, not at commit, so a
 * reader that reads `id > position` could pass an id whose transaction commits
 * later. A publish therefore takes a transaction-level advisory lock before its
 * `nextval`, held until its transaction ends: publishers are serialized from
 * their publish to their commit, so ids become visible in id order. PostgreSQL
 * makes a transaction visible before it releases its locks, so every snapshot
 * sees a prefix of the log (ids left by rollbacks aside, which never come back):
 * a reader never passes an event that commits later, and `max(id)` in a
 * transaction's snapshot is exactly the resume point of what it sees.
 *
 * Presence lives in `<table>_presence`: one row per topic and instance
 * (`streams`, `members` as a JSON array), and `<table>_presence_live`: one row
 * per instance, `expires_at` on the database's clock, renewed by every share,
 * so a share lives as long as its instance and hosts whose clocks disagree
 * still agree on which shares are live. See `presence.ts` for what each call
 * costs.
 *
 * Upgrades: a table made by an earlier version lacks `key` and the presence
 * tables; `epoch` also says whether they exist, and `create` (idempotent) adds
 * what is missing, so the `ALTER TABLE` and its lock happen once, not at every
 * start.
 */
import type { ResolvedOptions } from './options.js'

/** The advisory lock class of this package ('FHSS'); the table's name hash is the key. */
const LOCK_CLASS = 1179144019

/** The SQL of one broker, built once from its checked table name. */
export interface Statements {
  /** Returns the epoch and whether `key` and the presence tables exist; fails with 42P01 when the tables are missing. */
  readonly epoch: string
  /** Creates what is missing, serialized between instances (several statements, no parameters). */
  readonly create: string
  /** $1 topic, $2 body, $3 channel, $4 key (or null): takes the order lock, inserts, notifies at commit; returns the id. */
  readonly publish: string
  /** $1 after id, $2 limit: the state row and the events after an id, in one snapshot. */
  readonly read: string
  /** $1 from id (inclusive), $2 bound, $3 limit: `trimmed` and the rows from an id. */
  readonly range: string
  /** $1 limit: the newest rows, newest first. */
  readonly newest: string
  /** The newest id (null for an empty log) and the epoch. */
  readonly head: string
  /** $1 retention in ms: removes older events (never the newest) and raises `trimmed`. */
  readonly trim: string
  /**
   * $1 instance, $2 shares as a JSON array of `{ topic, streams, members }`
   * (`streams` null: the instance left the topic), $3 TTL in ms, $4 sweep:
   * renews the instance (its row in `_presence_live`), upserts and deletes
   * its rows; with $4, also deletes the instances that lapsed a whole TTL ago
   * and their rows (skipping rows locked now). Returns `live`: whether the
   * instance was live before.
   */
  readonly share: string
  /** $1 topic: the streams and the distinct members of its live shares. */
  readonly presence: string
}

export function statements(options: ResolvedOptions): Statements {
  const { log, meta, seq, at, presence, live } = options.sql
  const ttl = 'make_interval(secs => $3::double precision / 1000)'
  /** A share counts until its instance's renewal lapses; a row of an earlier version (no instance row) by its own. */
  const until = 'coalesce(l.expires_at, p.expires_at)'
  const table = options.table.replace(/'/g, "''")
  return {
    epoch: `SELECT epoch::text, EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('${log}') AND attname = 'key' AND NOT attisdropped) AS keyed, to_regclass('${presence}') IS NOT NULL AS shared, to_regclass('${live}') IS NOT NULL AS renewed FROM ${meta}`,
    create: [
      'BEGIN',
      `SELECT pg_advisory_xact_lock(${LOCK_CLASS}, hashtext('create:${table}'))`,
      `CREATE TABLE IF NOT EXISTS ${log} (id bigint PRIMARY KEY, topic text NOT NULL, body text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(), key text)`,
      // A table of an earlier version gains `key`; the ALTER (and its lock, held for a moment) only then.
      `DO $body$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('${log}') AND attname = 'key' AND NOT attisdropped) THEN ALTER TABLE ${log} ADD COLUMN key text; END IF; END $body$`,
      `CREATE INDEX IF NOT EXISTS ${at} ON ${log} (at)`,
      `CREATE SEQUENCE IF NOT EXISTS ${seq}`,
      `CREATE TABLE IF NOT EXISTS ${meta} (one boolean PRIMARY KEY DEFAULT true CHECK (one), epoch bigint NOT NULL, trimmed bigint NOT NULL DEFAULT 0)`,
      `INSERT INTO ${meta} (epoch) VALUES ((extract(epoch FROM clock_timestamp()) * 1000)::bigint) ON CONFLICT DO NOTHING`,
      `CREATE TABLE IF NOT EXISTS ${presence} (topic text NOT NULL, instance text NOT NULL, streams integer NOT NULL, members jsonb NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (topic, instance))`,
      `CREATE TABLE IF NOT EXISTS ${live} (instance text PRIMARY KEY, expires_at timestamptz NOT NULL)`,
      'COMMIT'
    ].join(';\n'),
    // OFFSET 0 keeps the lock in its own subquery, evaluated before nextval: the lock comes first.
    publish: `WITH e AS (INSERT INTO ${log} (id, topic, body, key) SELECT nextval('${seq.replace(/'/g, "''")}'), $1, $2, $4 FROM (SELECT pg_advisory_xact_lock(${LOCK_CLASS}, hashtext('${table}')) OFFSET 0) l RETURNING id) SELECT id::text, (SELECT epoch FROM ${meta})::text AS epoch, pg_notify($3, id::text) FROM e`,
    // The state row through scalar subqueries, not a join: a join with a table without statistics
    // (a new one) is estimated at hundreds of thousands of rows, and PostgreSQL then JIT-compiles
    // every read (10-40 ms each).
    read: `SELECT (SELECT epoch FROM ${meta})::text AS epoch, (SELECT trimmed FROM ${meta})::text AS trimmed, e.id::text AS id, e.topic, e.body, e.key FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT id, topic, body, key FROM ${log} WHERE id > $1 ORDER BY id LIMIT $2) e ON true ORDER BY e.id`,
    range: `SELECT (SELECT trimmed FROM ${meta})::text AS trimmed, e.id::text AS id, e.topic, e.body, e.key FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT id, topic, body, key FROM ${log} WHERE id >= $1 AND id <= $2 ORDER BY id LIMIT $3) e ON true ORDER BY e.id`,
    // Ordered by the bigint column, never by its text (ORDER BY id would take the output column: '99' > '200').
    newest: `SELECT n.id::text AS id, n.topic, n.body, n.key FROM (SELECT id, topic, body, key FROM ${log} ORDER BY id DESC LIMIT $1) n ORDER BY n.id DESC`,
    head: `SELECT (SELECT max(id) FROM ${log})::text AS head, (SELECT epoch FROM ${meta})::text AS epoch`,
    trim: `WITH d AS (DELETE FROM ${log} WHERE at < clock_timestamp() - make_interval(secs => $1::double precision / 1000) AND id < (SELECT max(id) FROM ${log}) RETURNING id) UPDATE ${meta} SET trimmed = greatest(trimmed, (SELECT max(id) FROM d)) WHERE EXISTS (SELECT 1 FROM d) RETURNING trimmed::text`,
    share: [
      `WITH s AS (SELECT topic, streams, members FROM jsonb_to_recordset($2::jsonb) AS s(topic text, streams integer, members jsonb))`,
      `, was AS (SELECT expires_at > now() AS live FROM ${live} WHERE instance = $1)`,
      `, renewed AS (INSERT INTO ${live} (instance, expires_at) VALUES ($1, now() + ${ttl}) ON CONFLICT (instance) DO UPDATE SET expires_at = excluded.expires_at)`,
      `, gone AS (DELETE FROM ${presence} p USING s WHERE s.streams IS NULL AND p.topic = s.topic AND p.instance = $1)`,
      `, swept AS (DELETE FROM ${presence} WHERE (topic, instance) IN (SELECT p.topic, p.instance FROM ${presence} p LEFT JOIN ${live} l ON l.instance = p.instance WHERE $4::boolean AND p.instance <> $1 AND ${until} < now() - ${ttl} FOR UPDATE OF p SKIP LOCKED))`,
      `, dead AS (DELETE FROM ${live} WHERE instance IN (SELECT instance FROM ${live} WHERE $4::boolean AND instance <> $1 AND expires_at < now() - ${ttl} FOR UPDATE SKIP LOCKED))`,
      `, put AS (INSERT INTO ${presence} (topic, instance, streams, members, expires_at) SELECT topic, $1, streams, members, now() + ${ttl} FROM s WHERE streams IS NOT NULL`,
      'ON CONFLICT (topic, instance) DO UPDATE SET streams = excluded.streams, members = excluded.members, expires_at = excluded.expires_at)',
      'SELECT coalesce((SELECT live FROM was), false) AS live'
    ].join(' '),
    presence: `SELECT (SELECT coalesce(sum(p.streams), 0) FROM ${presence} p LEFT JOIN ${live} l ON l.instance = p.instance WHERE p.topic = $1 AND ${until} > now())::text AS streams, ARRAY(SELECT DISTINCT m FROM ${presence} p LEFT JOIN ${live} l ON l.instance = p.instance CROSS JOIN LATERAL jsonb_array_elements_text(p.members) m WHERE p.topic = $1 AND ${until} > now()) AS members`
  }
}
