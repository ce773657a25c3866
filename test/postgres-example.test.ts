/**
 * The cluster example in its PostgreSQL mode: two instances of the example on
 * one database. Notes are rows, each published in the transaction that inserts
 * it; a page rendered on one instance shows the notes of both and resumes from
 * the same snapshot, so a note posted between the render and the stream's open
 * arrives once and a rendered one never comes again.
 *
 * The example imports the package by name, which resolves to dist/: `npm test`
 * builds first; run `npm run build` before running this file alone.
 */
import { postgresBroker } from 'fastify-html-sse/postgres'
import pg from 'pg'
import { test } from 'tap'
import { postgresNotes } from '../example/notes.js'
import { closeAll, examplePair, notesReachBoth } from './helpers/example.js'
import { privateDatabase } from './helpers/postgres.js'

test('two example instances on PostgreSQL: notes are rows, pages resume from their snapshot', async (t) => {
  const db = await privateDatabase(t)
  const pools = [0, 1].map(() => new pg.Pool({ connectionString: db.url, max: 3 }))
  for (const pool of pools) pool.on('error', () => {})
  // Ended after the apps and the brokers (teardowns run last first).
  t.teardown(() => Promise.all(pools.map((pool) => pool.end())))
  const pair = await examplePair(t, async (n) => {
    const pool = pools[n] as pg.Pool
    return { broker: postgresBroker({ pool, table: 'example_sse_log' }), notes: await postgresNotes(pool) }
  })
  const { tabA, tabB, late, page } = await notesReachBoth(t, pair)

  const rows = await pools[0]?.query('SELECT text FROM example_notes ORDER BY id')
  t.same(
    rows?.rows.map((r: { text: string }) => r.text),
    ['hello from A', 'posted in between'],
    'the notes are rows'
  )
  t.match(page, /hello from A/, "B's page shows the note posted on A (read from the table)")
  const list = await (await fetch(`${pair.baseB}/notes`)).text()
  t.ok(list.indexOf('posted in between') < list.indexOf('hello from A'), 'GET /notes lists the rows, newest first')
  await closeAll(pair, [tabA, tabB, late])
})
