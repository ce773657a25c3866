/**
 * The options of `postgresBroker`, their defaults and their checks, and the
 * part of a node-postgres (`pg`) pool the broker uses, typed structurally.
 */
import { FST_ERR_HTML_SSE_OPTION_INVALID } from '../../errors.js'
import { type LogOptions, optionalMs, resolveLogOptions } from '../shared/options.js'
import type { BrokerLogger } from '../types.js'

/** What a query answers: its rows. */
export interface PgResult {
  readonly rows: readonly unknown[]
}

/** A connection taken from a pool (a `pg` `PoolClient`). */
export interface PgPoolClient {
  query(text: string, values?: unknown[]): Promise<PgResult>
  /** Gives it back; with an error (or `true`) the pool destroys it. */
  release(err?: Error | boolean): void
  /**
   * A `pg` client emits `error` when its connection breaks, and a pool listens
   * only while it is idle: the broker listens while it holds one.
   */
  on?(event: 'error', listener: (err: Error) => void): unknown
  off?(event: 'error', listener: (err: Error) => void): unknown
}

/**
 * What the broker needs of a pool: a `pg.Pool` fits. Its `options` (the
 * connection settings) also make the broker's own listening connection.
 */
export interface PgPool {
  connect(): Promise<PgPoolClient>
  end(): Promise<void>
  readonly options?: object | undefined
}

/** Where the broker reports outages: a Fastify / pino logger fits. */
export type PostgresBrokerLogger = BrokerLogger

/** Options of `postgresBroker`. */
export interface PostgresBrokerOptions {
  /**
   * A `pg.Pool` of yours: publish, replay and lastId take connections from it
   * (one publish is one query), and the broker opens one more connection with
   * its settings for `LISTEN`. It is left open on close.
   */
  pool?: PgPool | undefined
  /**
   * Where to connect when no `pool` is given: the broker makes a small pool
   * (`max: 4`, `statement_timeout` = `commandTimeoutMs`) and ends it on close.
   * @default process.env.DATABASE_URL, else 'postgres://localhost:5432/postgres'
   */
  connectionString?: string | undefined
  /**
   * The table of the log, `name` or `schema.name`; created with its sequence
   * (`<table>_seq`), state row (`<table>_meta`) and presence
   * (`<table>_presence`, `<table>_presence_live`) when missing. Instances
   * with the same table share events.
   * @default 'fastify_html_sse_log'
   */
  table?: string | undefined
  /**
   * How many recent events a `Last-Event-ID` can resume after; 0 resumes only
   * from the newest id. A resume also needs its event to be within
   * `retentionMs`. Each instance keeps this many delivered events in memory and
   * serves most resumes from there, without a query.
   * @default 1000
   */
  replay?: number | undefined
  /**
   * How long an event stays in the table, in ms (the database's clock). An
   * instance that falls further behind sends its streams a `reset` instead of
   * skipping events. Give every instance sharing a table the same value.
   * @default 60000
   */
  retentionMs?: number | undefined
  /**
   * How long one query may take, in ms, waiting for a connection included.
   * `publish`, `replay` and `lastId` reject with
   * `FST_ERR_HTML_SSE_BROKER_UNAVAILABLE` past it; the listening connection is
   * taken for dead when a poll is not answered within it, and reconnected.
   * @default 5000
   */
  commandTimeoutMs?: number | undefined
  /**
   * The fallback poll, in ms: the listening connection reads the log this
   * often even without a notification, which also proves it alive.
   * @default 1000
   */
  pollMs?: number | undefined
  /**
   * Where outages are reported: a warning when the database goes away, once
   * per outage, and an info line when it is back. The plugin hands over its
   * own logger when this is not set. @default process warnings
   */
  logger?: PostgresBrokerLogger | undefined
}

/** The options after defaults. */
export interface ResolvedOptions extends LogOptions {
  readonly pool: PgPool | undefined
  readonly connectionString: string
  /** The table as given (the notification channel), and each part quoted for SQL. */
  readonly table: string
  readonly sql: {
    readonly log: string
    readonly meta: string
    readonly seq: string
    readonly at: string
    readonly presence: string
    /** The live instances of presence (`<table>_presence_live`: 14 characters, a 48-character name stays under 63). */
    readonly live: string
  }
  readonly pollMs: number
  /** Where the database is, for messages: `host:port/db`, never credentials. */
  readonly target: string
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/

/** `host:port/database` of a connection string, never its credentials. */
function describeConnection(url: string): string {
  try {
    const u = new URL(url)
    return `${u.hostname || 'localhost'}:${u.port || '5432'}${u.pathname}`
  } catch {
    return 'the configured database'
  }
}

/** Quotes a (checked) identifier, with an optional suffix on its last part. */
function quoted(parts: string[], suffix: string): string {
  return parts.map((p, i) => `"${i === parts.length - 1 ? p + suffix : p}"`).join('.')
}

/** Checks the options of `postgresBroker` and fills in the defaults. */
export function resolveOptions(options: unknown): ResolvedOptions {
  if (options === null || typeof options !== 'object') {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('of postgresBroker()', 'must be an object')
  }
  const o = options as Record<string, unknown>
  if (o.pool !== undefined) {
    const p = o.pool as Record<string, unknown> | null
    if (p === null || typeof p !== 'object' || typeof p.connect !== 'function' || typeof p.end !== 'function') {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('pool', 'must be a pg Pool (new pg.Pool(...) of "pg")')
    }
    if (o.connectionString !== undefined) {
      throw new FST_ERR_HTML_SSE_OPTION_INVALID('connectionString', 'cannot be combined with pool; give one of them')
    }
  }
  if (o.connectionString !== undefined && typeof o.connectionString !== 'string') {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('connectionString', 'must be a postgres:// URL string')
  }
  const table = o.table ?? 'fastify_html_sse_log'
  const parts = typeof table === 'string' ? table.split('.') : []
  if (parts.length < 1 || parts.length > 2 || !parts.every((p) => NAME.test(p))) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID(
      'table',
      `must be a name or schema.name of letters, digits and _ (at most 48 each), got ${JSON.stringify(table)}`
    )
  }
  const shared = resolveLogOptions(o, 1000)
  const pollMs = optionalMs(o, 'pollMs', 10, 600_000, 1000)
  const pool = o.pool as PgPool | undefined
  const connectionString =
    (o.connectionString as string | undefined) ?? process.env.DATABASE_URL ?? 'postgres://localhost:5432/postgres'
  return {
    pool,
    connectionString,
    table: table as string,
    sql: {
      log: quoted(parts, ''),
      meta: quoted(parts, '_meta'),
      seq: quoted(parts, '_seq'),
      at: `"${parts.at(-1)}_at"`,
      presence: quoted(parts, '_presence'),
      live: quoted(parts, '_presence_live')
    },
    ...shared,
    pollMs,
    target: pool === undefined ? describeConnection(connectionString) : 'the given pool'
  }
}
