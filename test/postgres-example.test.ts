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
import type { Broker } from 'fastify-html-sse'
import { postgresBroker } from 'fastify-html-sse/postgres'
import pg from 'pg'
import { test } from 'tap'
import { buildApp } from '../example/app.js'
import { postgresNotes } from '../example/notes.js'
import { privateDatabase } from './helpers/postgres.js'
import { connect, listen, until } from './helpers/sse.js'

const note = (text: string) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ text }).toString()
})

test('two example instances on PostgreSQL: notes are rows, pages resume from their snapshot', async (t) => {
  const db = await privateDatabase(t)
  const pools = [0, 1].map(() => new pg.Pool({ connectionString: db.url, max: 3 }))
  for (const pool of pools) pool.on('error', () => {})
  t.teardown(() => Promise.all(pools.map((pool) => pool.end())))
  const brokers = pools.map((pool) => postgresBroker({ pool, table: 'example_sse_log' }))
  const [a, b] = await Promise.all(
    pools.map(async (pool, n) =>
      buildApp({
        heartbeatMs: 0,
        jobIdBase: n * 1000,
        broker: brokers[n] as Broker,
        notes: await postgresNotes(pool)
      })
    )
  )
  if (a === undefined || b === undefined) throw new Error('two apps')
  // The apps first, then the brokers the test made (the pools after them).
  t.teardown(() => Promise.all([a.close(), b.close()]).then(() => Promise.all(brokers.map((broker) => broker.close()))))
  const [baseA, baseB] = await Promise.all([listen(a), listen(b)])
  const tabA = await connect(`${baseA}/live`)
  const tabB = await connect(`${baseB}/live?htmx=4`)
  await until(() => a.sse.stats().topics.notes === 1 && b.sse.stats().topics.notes === 1, 5000, 'both tabs')

  t.equal((await fetch(`${baseA}/notes`, note('hello from A'))).status, 200)
  await until(() => tabB.events.some((e) => e.data.includes('hello from A')), 5000, 'the note on B')
  await until(() => tabA.events.some((e) => e.data.includes('hello from A')), 5000, 'the note on A')
  const rows = await pools[0]?.query('SELECT text FROM example_notes')
  t.same(
    rows?.rows.map((r: { text: string }) => r.text),
    ['hello from A'],
    'the note is a row'
  )

  // A page rendered on B, a note posted on A, then the page's stream opens on B.
  const page = await (await fetch(`${baseB}/?htmx=4`)).text()
  t.match(page, /hello from A/, "B's page shows the note posted on A (read from the table)")
  const live = /hx-sse:connect="([^"]+)"/.exec(page)?.[1]?.replaceAll('&amp;', '&')
  t.match(live, /^\/live\?htmx=4&lastEventId=\d+-\d+$/, 'the page resumes from the id of its snapshot')
  t.equal((await fetch(`${baseA}/notes`, note('posted in between'))).status, 200)
  const late = await connect(baseB + live)
  await until(() => late.events.some((e) => e.data.includes('posted in between')), 5000, 'the note posted in between')
  t.notOk(
    late.events.some((e) => e.data.includes('hello from A')),
    'the note the page rendered does not come again'
  )
  const list = await (await fetch(`${baseB}/notes`)).text()
  t.ok(list.indexOf('posted in between') < list.indexOf('hello from A'), 'GET /notes lists the rows, newest first')
  for (const c of [tabA, tabB, late]) c.close()
  await until(() => a.sse.stats().connections === 0 && b.sse.stats().connections === 0, 5000, 'every stream to close')
})
