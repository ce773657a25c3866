/**
 * The example's routes over a real socket, with real SSE clients (no browser):
 * per-tab streams, shared topics, a job with resume, the open-stream count.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { HtmxScripts } from '../components/index.js'
import { type BuildAppOptions, buildApp } from '../example/app.js'
import { Button, type Job, JobCard, NoteForm, Partial, Presence, Progress } from '../example/views.js'
import { collectEvents } from '../lib/testing.js'
import { type Client, connect, until } from './helpers/sse.js'

// The SSE clients here are raw HTTP/1.1 connections (./helpers/sse.ts). Node's
// fetch (the `eventsource` package) opens a fresh, never-used socket when a
// streaming response is aborted (nodejs/undici#5845), which holds app.close()
// until Node's header timeout: that would hide what these tests measure.

async function start(t: Test, opts: BuildAppOptions = {}): Promise<{ app: FastifyInstance; base: string }> {
  const app = await buildApp({ heartbeatMs: 1000, ...opts })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return { app, base }
}

/** Every stream is gone, and closing the app is prompt. */
async function finish(t: Test, app: FastifyInstance): Promise<void> {
  await until(() => app.sse.stats().connections === 0, 5000, 'every stream to close')
  t.equal(app.sse.stats().connections, 0, 'no stream left open')
  const started = performance.now()
  await app.close()
  t.ok(performance.now() - started < 500, 'app.close() is prompt')
}

interface Seen {
  event: string
  data: string
  id: string | undefined
}

/** Waits for an event of `client`, at or after index `from`, that `match` accepts. */
async function next(client: Client, match: (event: Seen) => boolean, what: string, from = 0): Promise<Seen> {
  let found: Seen | undefined
  await until(
    () => {
      found = client.events
        .slice(from)
        .map((event) => ({ event: event.event ?? 'message', data: event.data, id: event.id }))
        .find(match)
      return found !== undefined
    },
    5000,
    what
  )
  return found as Seen
}

const isClock = (event: { data: string }) => event.data.startsWith('<hx-partial hx-target="#clock">')
const updateOf = (data: string) => Number(/Update #(\d+) /.exec(data)?.[1])

t.test('the page, for htmx 2 and htmx 4, with its favicon and client files', async (t) => {
  const app = await buildApp()
  t.teardown(() => app.close())

  const htmx2 = await app.inject('/')
  t.equal(htmx2.statusCode, 200)
  t.match(htmx2.headers['content-type'], 'text/html')
  t.ok(htmx2.body.startsWith('<!doctype html><html lang="en">'))
  t.ok(htmx2.body.includes(await (<HtmxScripts htmx={2} />)), 'loads htmx 2 and htmx-ext-sse')
  t.ok(htmx2.body.includes('sse-connect="/live?htmx=2"'), 'one page stream')
  t.ok(htmx2.body.includes('sse-swap="button"'), 'the named button event')
  t.ok(htmx2.body.includes('hx-trigger="sse:reset"'), 'refetch on reset')

  const htmx4 = await app.inject('/?htmx=4')
  t.ok(htmx4.body.includes(await (<HtmxScripts htmx={4} />)), 'loads htmx 4 and hx-sse')
  t.ok(htmx4.body.includes('hx-sse:connect="/live?htmx=4"'))
  t.notOk(htmx4.body.includes('sse-swap'), 'no htmx 2 attribute')
  t.ok(htmx4.body.includes('hx-trigger="reset from:#live"'))

  const stale = await app.inject('/?lastEventId=a%26b')
  t.ok(stale.body.includes('sse-connect="/live?htmx=2&lastEventId=a%26b"'), 'lastEventId reaches the stream')

  for (const file of ['htmx2.min.js', 'htmx2-sse.min.js', 'htmx4.min.js', 'htmx4-sse.min.js']) {
    t.equal((await app.inject(`/fastify-html-sse/${file}`)).statusCode, 200, file)
  }
  const svg = await app.inject('/favicon.svg')
  t.equal(svg.statusCode, 200)
  t.match(svg.headers['content-type'], 'image/svg+xml')
  t.equal((await app.inject('/favicon.ico')).statusCode, 204)
})

t.test('the clock: each stream runs its own generator, which stops when the client leaves', async (t) => {
  const logs: Array<{ level: number; msg: string; reqId?: string; updates?: number }> = []
  const stream = { write: (line: string) => logs.push(JSON.parse(line)) }
  const { app } = await start(t, { logger: { level: 'info', stream } })

  const [one, two] = await Promise.all([
    collectEvents(app, '/live', { count: 14 }),
    collectEvents(app, '/live?htmx=4', { count: 14 })
  ])
  for (const events of [one, two]) {
    const clock = events.filter(isClock)
    t.ok(clock.length >= 10, `${clock.length} clock updates`)
    t.same(
      clock.map((event) => updateOf(event.data)),
      clock.map((_, i) => i + 1),
      'Update #1, #2, #3… of its own'
    )
    t.match(
      clock[0]?.data,
      /^<hx-partial hx-target="#clock"><span>Update #1 \d\d:\d\d:\d\d\.\d{6}<\/span><\/hx-partial>$/
    )
    t.equal(clock[0]?.event, 'message', 'unnamed: htmx 2 and htmx 4 alike')
  }

  await until(() => logs.filter((line) => line.msg === 'clock stopped').length === 2, 5000, 'both clocks to stop')
  const stopped = logs.filter((line) => line.msg === 'clock stopped')
  t.equal(new Set(stopped.map((line) => line.reqId)).size, 2, 'logged with each request id')
  t.ok(
    stopped.every((line) => (line.updates ?? 0) >= 10),
    'after the updates it sent'
  )
  t.notOk(
    logs.some((line) => line.level >= 50),
    'nothing logged as an error'
  )
  await finish(t, app)
})

t.test('the button: a named event for htmx 2, an unnamed partial for htmx 4', async (t) => {
  const { app } = await start(t)
  const htmx2 = await collectEvents(app, '/live?htmx=2', { count: 3 })
  t.same(
    htmx2.find((event) => event.event === 'button'),
    { event: 'button', data: <Button count={1} />, id: undefined }
  )
  const htmx4 = await collectEvents(app, '/live?htmx=4', { count: 3 })
  t.notOk(
    htmx4.some((event) => event.event !== 'message'),
    'htmx 4 only gets unnamed events'
  )
  t.ok(
    htmx4.some(
      (event) =>
        event.data ===
        (
          <Partial target="#button">
            <Button count={1} />
          </Partial>
        )
    ),
    'the same <Button>, in a partial'
  )
  await finish(t, app)
})

t.test('a posted note reaches every page stream, as text', async (t) => {
  const { app, base } = await start(t)
  const tabs = await Promise.all([connect(`${base}/live`), connect(`${base}/live?htmx=4`)])
  for (const tab of tabs) await next(tab, isClock, 'the stream to open')

  const text: string = `<script>alert("hi")</script> & <b>bold</b>`
  const marks = tabs.map((tab) => tab.events.length)
  const res = await app.inject({
    method: 'POST',
    url: '/notes',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ text: `  ${text}  ` }).toString()
  })
  t.equal(res.statusCode, 200)
  t.equal(res.body, <NoteForm />, 'the response is a fresh form')

  const seen = await Promise.all(
    tabs.map((tab, i) => next(tab, (event) => event.data.includes('#notes'), 'the note', marks[i]))
  )
  const [first, second] = seen as [Seen, Seen]
  t.equal(first.data, second.data, 'the same frame serves htmx 2 and htmx 4')
  t.ok(first.id, 'published with an id')
  t.ok(first.data.startsWith('<hx-partial hx-target="#notes" hx-swap="afterbegin"><li>'))
  const escaped = await (<p safe>{text}</p>)
  t.ok(first.data.includes(escaped), 'the text is escaped')
  t.notOk(first.data.includes('<script>') || first.data.includes('<b>'), 'no user HTML')

  const list = await app.inject('/notes')
  t.ok(list.body.startsWith('<ul id="notes" class="notes"><li>'), 'the refetch fragment')
  t.ok(list.body.includes(escaped))

  const published = app.sse.stats().published
  const empty = await app.inject({
    method: 'POST',
    url: '/notes',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: 'text=%20%20'
  })
  t.equal(empty.body, <NoteForm />)
  t.equal(app.sse.stats().published, published, 'a blank note is not published')

  for (const tab of tabs) tab.close()
  await finish(t, app)
})

t.test('a job reaches 100% on its own topic; a late client resumes from Last-Event-ID', async (t) => {
  const { app, base } = await start(t)
  const tabs = await Promise.all([connect(`${base}/live?htmx=2`), connect(`${base}/live?htmx=4`)])
  for (const tab of tabs) await next(tab, isClock, 'the stream to open')

  t.equal((await app.inject({ method: 'POST', url: '/jobs' })).statusCode, 204)
  const cards = await Promise.all(tabs.map((tab) => next(tab, (event) => event.data.includes('#jobs'), 'the job card')))
  const lastEventId = /lastEventId=([^"&]+)/.exec(cards[0]?.data ?? '')?.[1] ?? ''
  const job: Job = { id: 1, percent: 0, lastEventId: decodeURIComponent(lastEventId), startedAt: 0, done: false }
  t.same(
    cards.map((card) => card.data),
    [
      <Partial target="#jobs" swap="afterbegin">
        <JobCard job={job} htmx={2} />
      </Partial>,
      <Partial target="#jobs" swap="afterbegin">
        <JobCard job={job} htmx={4} />
      </Partial>
    ],
    'each htmx line gets a card that connects its way'
  )
  for (const tab of tabs) tab.close()

  // Connect a second late, with the id the card carries: every step comes, none twice.
  await sleep(1000)
  const url = `/jobs/1/events?lastEventId=${lastEventId}`
  const events = await collectEvents(app, url, { count: 21, timeoutMs: 6000 })
  const steps = events.slice(0, 19)
  t.same(
    steps.map((event) => event.data),
    steps.map((_, i) => <Progress id={1} percent={5 * (i + 1)} />),
    '5%, 10%, … 95%, from the first'
  )
  t.match(events[19]?.data, /^<div class="job-head"><strong>Job #1<\/strong><span>Done in \d+\.\d s<\/span>/)
  t.match(events[19]?.data, 'aria-valuenow="100"', '100%')
  t.same({ ...events[20], id: undefined }, { event: 'done', data: '', id: undefined }, 'then `done` closes it')
  const ids = events.map((event) => event.id ?? '')
  t.same(
    [...ids].sort((a, b) => Number(a.split('-')[1]) - Number(b.split('-')[1])),
    ids,
    'in publish order'
  )

  const page = await app.inject('/')
  t.ok(page.body.includes('<article class="job">'), 'a finished job renders without a stream')
  t.notOk(page.body.includes('sse-connect="/jobs/'))

  const unknown = await collectEvents(app, '/jobs/99/events', { count: 1 })
  t.same(unknown, [{ event: 'done', data: '', id: undefined }], 'an unknown job tells its card to stop')
  await finish(t, app)
})

t.test('the open-stream count is published when it changes', async (t) => {
  const { app, base } = await start(t)
  const count = (n: number) => (
    <Partial target="#presence">
      <Presence count={n} />
    </Partial>
  )
  const a = await connect(`${base}/live`)
  await next(a, (event) => event.data === count(1), 'its own count, on open')
  const mark = a.events.length
  const b = await connect(`${base}/live?htmx=4`)
  const two = await next(a, (event) => event.data === count(2), 'the count to rise', mark)
  t.ok(two.id, 'published to the presence topic')
  const after = a.events.findIndex((event) => event.data === two.data) + 1
  b.close()
  await next(a, (event) => event.data === count(1), 'the count to fall', after)
  t.pass('2 when a second stream opens, 1 when it closes')
  a.close()
  await finish(t, app)
})

t.test('app.close() ends open page streams at once', async (t) => {
  const { app, base } = await start(t)
  const tabs = await Promise.all([connect(`${base}/live`), connect(`${base}/live?htmx=4`)])
  for (const tab of tabs) await next(tab, isClock, 'the stream to open')
  t.equal(app.sse.stats().connections, 2)
  const started = performance.now()
  await app.close()
  t.ok(performance.now() - started < 500, 'prompt')
  t.equal(app.sse.stats().connections, 0)
  for (const tab of tabs) tab.close()
})
