/**
 * Where the example keeps its notes. In memory (one instance, or Redis: each
 * instance has its own list), or as rows of PostgreSQL (`postgresNotes`): then
 * a note is published in the transaction that inserts it, so every tab gets it
 * iff it is saved, and a page reads its notes and its resume point from one
 * snapshot, so its stream misses none and repeats none.
 */
import type { SseHub } from 'fastify-html-sse'
import type { Note } from './views.js'

/** How the app reads and writes notes. */
export interface NoteStore {
  /** The newest notes and the id the page's stream resumes from, as of one moment. */
  page(sse: SseHub): Promise<{ notes: Note[]; lastEventId: string | null }>
  /** Saves `note` and publishes `html` to the `notes` topic with it. */
  add(sse: SseHub, note: Note, html: JSX.Element): Promise<void>
  /** The newest notes (what a page refetches after a `reset`). */
  list(): Promise<Note[]>
}

const SHOWN = 20

/** Notes in this process's memory. */
export function memoryNotes(): NoteStore {
  const notes: Note[] = []
  return {
    async page(sse) {
      return { notes: [...notes], lastEventId: await sse.lastId() }
    },
    async add(sse, note, html) {
      notes.unshift(note)
      notes.length = Math.min(notes.length, SHOWN)
      await sse.publish('notes', html)
    },
    list: () => Promise.resolve([...notes])
  }
}

/** A query's answer, as `pg` gives it. */
export interface Rows<R> {
  rows: R[]
}

/**
 * What the notes need of a connection: a `pg` `PoolClient` fits. Described
 * here rather than imported, so that this module needs no `pg` types.
 */
export interface NotesClient {
  query<R = unknown>(text: string, values?: unknown[]): Promise<Rows<R>>
  release(): void
}

/** What the notes need of a pool: a `pg.Pool` fits. */
export interface NotesPool {
  query<R = unknown>(text: string, values?: unknown[]): Promise<Rows<R>>
  connect(): Promise<NotesClient>
}

/**
 * Runs `work` in a transaction of its own on a connection of `pool`, opened
 * with `begin`: committed when `work` returns, rolled back when it throws.
 */
export async function inTransaction<C extends NotesClient, T>(
  pool: { connect(): Promise<C> },
  begin: string,
  work: (client: C) => Promise<T>
): Promise<T> {
  const client = await pool.connect()
  try {
    await client.query(begin)
    const result = await work(client)
    await client.query('COMMIT')
    return result
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  } finally {
    client.release()
  }
}

/** Notes as rows of `example_notes`; the app's broker must be `postgresBroker` on the same database. */
export async function postgresNotes(pool: NotesPool): Promise<NoteStore> {
  // Instances starting together would race on CREATE TABLE IF NOT EXISTS: one at a time.
  await pool.query(`BEGIN;
    SELECT pg_advisory_xact_lock(hashtext('example_notes'));
    CREATE TABLE IF NOT EXISTS example_notes (id bigserial PRIMARY KEY, text text NOT NULL, at timestamptz NOT NULL DEFAULT now());
    COMMIT`)
  const newest = `SELECT text, at FROM example_notes ORDER BY id DESC LIMIT ${SHOWN}`
  return {
    page: (sse) =>
      // One snapshot for the rows and the resume point: nothing missed, nothing twice.
      inTransaction(pool, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async (client) => {
        const { rows } = await client.query<Note>(newest)
        return { notes: rows, lastEventId: await sse.lastId({ transaction: client }) }
      }),
    add: (sse, note, html) =>
      inTransaction(pool, 'BEGIN', async (client) => {
        await client.query('INSERT INTO example_notes (text, at) VALUES ($1, $2)', [note.text, note.at])
        // Written with the row: tabs get it iff the INSERT commits. Publish last, just before COMMIT:
        // other publishers wait for this transaction from here on.
        await sse.publish('notes', html, 'message', { transaction: client })
      }),
    async list() {
      return (await pool.query<Note>(newest)).rows
    }
  }
}
