/**
 * The cluster example in tests: two instances of the example app sharing a
 * broker (Redis, or PostgreSQL with notes as rows), and what both modes
 * promise of notes.
 *
 * The example imports the package by name, which resolves to dist/: `npm test`
 * builds first; run `npm run build` before running its tests alone.
 */
import type { FastifyInstance } from 'fastify'
import type { Broker } from 'fastify-html-sse'
import type { Test } from 'tap'
import { buildApp } from '../../example/app.js'
import type { NoteStore } from '../../example/notes.js'
import { type Client, connect, listen, until } from './sse.js'

/** Two instances of the example, listening. */
export interface ExamplePair {
  readonly a: FastifyInstance
  readonly b: FastifyInstance
  readonly baseA: string
  readonly baseB: string
}

/** A form POST of a note, for `fetch`. */
export const note = (text: string) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ text }).toString()
})

/**
 * Instances 0 and 1 of the example, each on what `backend(n)` gives (the
 * notes default to memory) with job ids of its own. At teardown the apps
 * close, then the brokers (which the test made, so the test closes them).
 */
export async function examplePair(
  t: Test,
  backend: (n: number) => Promise<{ broker: Broker; notes?: NoteStore }>
): Promise<ExamplePair> {
  const made = await Promise.all([0, 1].map(backend))
  const [a, b] = await Promise.all(
    made.map(({ broker, notes }, n) =>
      buildApp({ heartbeatMs: 0, jobIdBase: n * 1000, broker, ...(notes === undefined ? {} : { notes }) })
    )
  )
  if (a === undefined || b === undefined) throw new Error('two apps')
  t.teardown(() =>
    Promise.all([a.close(), b.close()]).then(() => Promise.all(made.map(({ broker }) => broker.close())))
  )
  const [baseA, baseB] = await Promise.all([listen(a), listen(b)])
  return { a, b, baseA, baseB }
}

/**
 * What both modes promise of notes: a note posted on A reaches a tab of each
 * instance; a page rendered on B resumes from the id it was rendered at, so a
 * note posted on A between the render and the open of the page's stream comes
 * on that stream, and a note the page rendered does not come again. Returns
 * the three open tabs and the page.
 */
export async function notesReachBoth(
  t: Test,
  { a, b, baseA, baseB }: ExamplePair
): Promise<{ tabA: Client; tabB: Client; late: Client; page: string }> {
  const tabA = await connect(`${baseA}/live`)
  const tabB = await connect(`${baseB}/live?htmx=4`)
  await until(() => a.sse.stats().topics.notes === 1 && b.sse.stats().topics.notes === 1, 5000, 'both tabs')

  t.equal((await fetch(`${baseA}/notes`, note('hello from A'))).status, 200)
  await until(() => tabB.events.some((e) => e.data.includes('hello from A')), 5000, 'the note on B')
  await until(() => tabA.events.some((e) => e.data.includes('hello from A')), 5000, 'the note on A')

  // A page rendered on B, a note posted on A, then the page's stream opens on B.
  const page = await (await fetch(`${baseB}/?htmx=4`)).text()
  const live = /hx-sse:connect="([^"]+)"/.exec(page)?.[1]?.replaceAll('&amp;', '&')
  t.match(live, /^\/live\?htmx=4&lastEventId=\d+-\d+$/, 'the page resumes from the id it was rendered at')
  t.equal((await fetch(`${baseA}/notes`, note('posted in between'))).status, 200)
  const late = await connect(baseB + live)
  await until(() => late.events.some((e) => e.data.includes('posted in between')), 5000, 'the note posted in between')
  t.notOk(
    late.events.some((e) => e.data.includes('hello from A')),
    'the note the page rendered does not come again'
  )
  return { tabA, tabB, late, page }
}

/** Closes `clients` and waits until neither instance has a stream left. */
export async function closeAll({ a, b }: ExamplePair, clients: Client[]): Promise<void> {
  for (const c of clients) c.close()
  await until(() => a.sse.stats().connections === 0 && b.sse.stats().connections === 0, 5000, 'every stream to close')
}
