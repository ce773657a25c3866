/**
 * The example's routes over a real socket, with real SSE clients (no browser):
 * pages sent with `reply.html()`, forms read by `@fastify/formbody`, per-tab
 * streams, shared topics, a job with resume, presence on open and close, the
 * render-to-connect gap, and Prometheus metrics at /metrics.
 *
 * The example imports the package by name, which resolves to dist/: `npm test`
 * builds first; run `npm run build` before running this file alone.
 */
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { HtmxScripts, Partial } from '../components/index.js'
import { type BuildAppOptions, buildApp } from '../example/app.js'
import { Button, type Job, JobCard, NoteForm, Presence, Progress } from '../example/views.js'
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

/** Every stream is gone, and the app closes. */
async function finish(t: Test, app: FastifyInstance): Promise<void> {
  await until(() => app.sse.stats().connections === 0, 5000, 'every stream to close')
  t.equal(app.sse.stats().connections, 0, 'no stream left open')
  await app.close()
}

const form = (text: string) => ({
  method: 'POST' as const,
  url: '/notes',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  payload: new URLSearchParams({ text }).toString()
})

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

t.test('the page, for htmx 2 and htmx 4, sent with reply.html(), with its favicon and client files', async (t) => {
  const app = await buildApp()
  t.teardown(() => app.close())

  const htmx2 = await app.inject('/')
  t.equal(htmx2.statusCode, 200)
  t.equal(htmx2.headers['content-type'], 'text/html; charset=utf-8')
  t.equal(htmx2.headers['content-length'], String(Buffer.byteLength(htmx2.body)), 'sent whole, with its length')
  t.ok(htmx2.body.startsWith('<!doctype html><html lang="en">'), 'a doctype: standards mode')
  t.ok(htmx2.body.includes(await (<HtmxScripts htmx={2} />)), 'loads htmx 2, htmx-ext-sse and the resume script')
  const empty = await app.sse.lastId()
  t.ok(
    htmx2.body.includes(`sse-connect="/live?htmx=2&lastEventId=${empty}"`),
    "one page stream; nothing published yet, so it resumes from the empty log's id"
  )
  t.ok(htmx2.body.includes('hx-trigger="sse:reset"'), 'refetch on reset')
  t.notOk(htmx2.body.includes('sse-swap="button"'), 'every update is an unnamed partial')
  t.ok(htmx2.body.includes('<span class="pill" id="presence">0 open tabs</span>'))

  const htmx4 = await app.inject('/?htmx=4')
  t.ok(htmx4.body.includes(await (<HtmxScripts htmx={4} />)), 'loads htmx 4 and hx-sse')
  t.ok(htmx4.body.includes(`hx-sse:connect="/live?htmx=4&lastEventId=${empty}"`))
  t.notOk(htmx4.body.includes('sse-'), 'no htmx 2 attribute')
  t.ok(htmx4.body.includes('hx-trigger="reset from:#live"'))

  const id = await app.sse.publish('notes', <p>x</p>)
  const resumable = await app.inject('/?htmx=4')
  t.ok(resumable.body.includes(`hx-sse:connect="/live?htmx=4&lastEventId=${id}"`), 'the stream resumes from the id')
  const stale = await app.inject('/?lastEventId=a%26b')
  t.ok(
    stale.body.includes('sse-connect="/live?htmx=2&lastEventId=a%26b"'),
    'a lastEventId of the query is used instead'
  )

  for (const src of (await (<HtmxScripts htmx={2} />)).matchAll(/src="([^"]+)"/g)) {
    const file = await app.inject(src[1] as string)
    t.equal(file.statusCode, 200, String(src[1]))
    t.match(file.headers['cache-control'], 'immutable')
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

t.test('the button: the same unnamed partial for htmx 2 and htmx 4', async (t) => {
  const { app } = await start(t)
  const button = await (
    <Partial target="#button">
      <Button count={1} />
    </Partial>
  )
  for (const url of ['/live?htmx=2', '/live?htmx=4']) {
    const events = await collectEvents(app, url, { count: 4 })
    t.notOk(
      events.some((event) => event.event !== 'message'),
      `${url}: only unnamed events`
    )
    t.ok(
      events.some((event) => event.data === button),
      `${url}: the <Button>, in a partial`
    )
  }
  await finish(t, app)
})

t.test('a posted note reaches every page stream, as text', async (t) => {
  const { app, base } = await start(t)
  const tabs = await Promise.all([connect(`${base}/live`), connect(`${base}/live?htmx=4`)])
  for (const tab of tabs) await next(tab, isClock, 'the stream to open')

  const text: string = `<script>alert("hi")</script> & <b>bold</b>`
  const marks = tabs.map((tab) => tab.events.length)
  const res = await app.inject(form(`  ${text}  `))
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'text/html; charset=utf-8')
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
  const empty = await app.inject(form('  '))
  t.equal(empty.body, <NoteForm />)
  t.equal(app.sse.stats().published, published, 'a blank note is not published')
  const bad = await app.inject({ ...form('x'), payload: 'text=%E0%A4%A' })
  t.ok(bad.statusCode < 500, `a malformed body: ${bad.statusCode}, not a crash`)
  const json = await app.inject({ method: 'POST', url: '/notes', payload: { text: 'as json' } })
  t.equal(json.statusCode, 200, 'a JSON body works too')

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

  // A live watcher sees every step; one that connects late, with the id the card carries,
  // gets only the newest step (progress is keyed), then `done`.
  const live = await connect(`${base}/jobs/1/events`)
  await until(() => live.events.some((event) => event.event === 'done'), 10_000, 'the job to finish')
  live.close()
  const progress = live.events.filter((event) => event.event === undefined).map((event) => event.data)
  t.same(
    progress.slice(0, -1),
    progress.slice(0, -1).map((_, i) => <Progress id={1} percent={100 - 5 * (progress.length - 1 - i)} />),
    'live: every step, 5% apart, up to 95%'
  )
  const url = `/jobs/1/events?lastEventId=${lastEventId}`
  const events = await collectEvents(app, url, { count: 2, timeoutMs: 6000 })
  t.match(events[0]?.data, /^<div class="job-head"><strong>Job #1<\/strong><span>Done in \d+\.\d s<\/span>/)
  t.match(events[0]?.data, 'aria-valuenow="100"', 'a late card gets 100% alone: the earlier steps are superseded')
  t.same({ ...events[1], id: undefined }, { event: 'done', data: '', id: undefined }, 'then `done` closes it')

  const page = await app.inject('/')
  t.ok(page.body.includes('<article class="job">'), 'a finished job renders without a stream')
  t.notOk(page.body.includes('sse-connect="/jobs/'))

  const unknown = await collectEvents(app, '/jobs/99/events', { count: 1 })
  t.same(unknown, [{ event: 'done', data: '', id: undefined }], 'an unknown job tells its card to stop')
  await finish(t, app)
})

t.test('the open-tab count is published when a page stream opens and when it closes', async (t) => {
  const { app, base } = await start(t)
  const count = async (n: number) =>
    await (
      <Partial target="#presence">
        <Presence count={n} />
      </Partial>
    )
  const one = await count(1)
  const two = await count(2)
  const a = await connect(`${base}/live`)
  await next(a, (event) => event.data === one, 'its own count, on open')
  const mark = a.events.length
  const b = await connect(`${base}/live?htmx=4`)
  const rose = await next(a, (event) => event.data === two, 'the count to rise', mark)
  t.ok(rose.id, 'published to the presence topic')
  const after = a.events.findIndex((event) => event.data === two) + 1

  // A job stream is not a tab: it publishes nothing.
  t.equal((await app.inject({ method: 'POST', url: '/jobs' })).statusCode, 204)
  const job = await connect(`${base}/jobs/1/events`)
  await until(() => app.sse.stats().connections === 3, 5000, 'the job stream to open')
  b.close()
  await next(a, (event) => event.data === one, 'the count to fall', after)
  t.same(
    a.events
      .slice(after)
      .filter((event) => event.data.includes('#presence'))
      .map((event) => event.data),
    [one],
    '2 when a second tab opens, 1 when it closes; the job stream published nothing'
  )
  job.close()
  a.close()
  await finish(t, app)
})

t.test('the render-to-connect gap: a note posted after the page rendered reaches its stream once', async (t) => {
  const { app, base } = await start(t)
  t.equal((await app.inject(form('before'))).statusCode, 200)
  const page = await app.inject('/')
  t.ok(page.body.includes('<p>before</p>'), 'the page shows the note')
  const url = /sse-connect="([^"]+)"/.exec(page.body)?.[1]?.replaceAll('&amp;', '&')
  t.match(url, /^\/live\?htmx=2&lastEventId=\d+-\d+$/)
  t.equal((await app.inject(form('between'))).statusCode, 200)

  const tab = await connect(base + url)
  const between = await next(tab, (event) => event.data.includes('<p>between</p>'), 'the note posted in between')
  const note = await next(tab, (event) => event.data.includes('#notes'), 'any note')
  t.same(note, between, 'the first note it gets is the one posted in between')
  t.ok(between.id, 'replayed with its id')
  t.equal((await app.inject(form('after'))).statusCode, 200)
  await next(tab, (event) => event.data.includes('<p>after</p>'), 'a later note')
  t.same(
    tab.events.filter((event) => event.data.includes('#notes')).map((event) => /<p>(\w+)<\/p>/.exec(event.data)?.[1]),
    ['between', 'after'],
    'each once; the note the page rendered does not come again'
  )
  tab.close()
  await finish(t, app)
})

t.test('/metrics: Prometheus text through the OpenTelemetry SDK, with the plugin instruments', async (t) => {
  const { app, base } = await start(t)
  const scrape = async () => {
    const res = await app.inject('/metrics')
    t.equal(res.statusCode, 200)
    t.match(res.headers['content-type'], 'text/plain')
    return res.body
  }
  const value = (text: string, name: string) =>
    Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
  const before = await scrape()
  const tab = await connect(`${base}/live`)
  await next(tab, isClock, 'the stream to open')
  await next(tab, (event) => event.data.includes('#presence'), 'the open-tab count')
  await app.inject(form('counted'))
  const during = await scrape()
  for (const name of ['sse_streams_open', 'sse_streams_opened_total', 'sse_events_published_total']) {
    t.match(during, new RegExp(`^# TYPE ${name.replace(/_total$/, '')}`, 'm'), `${name} is exported`)
  }
  // Other apps in this process share the global provider: compare before and after.
  const opened = value(during, 'sse_streams_opened_total') - (value(before, 'sse_streams_opened_total') || 0)
  t.equal(opened, 1, 'one stream opened')
  t.equal(value(during, 'sse_streams_open') - (value(before, 'sse_streams_open') || 0), 1, 'one stream open')
  t.ok(
    value(during, 'sse_events_published_total') - (value(before, 'sse_events_published_total') || 0) >= 2,
    'the presence and the note were published'
  )
  tab.close()
  await until(() => app.sse.stats().connections === 0, 5000, 'the stream to close')
  const after = await scrape()
  t.equal(value(after, 'sse_streams_open'), value(before, 'sse_streams_open') || 0, 'and closed again')
  await finish(t, app)
})

t.test('app.close() ends open page streams', async (t) => {
  const { app, base } = await start(t)
  const tabs = await Promise.all([connect(`${base}/live`), connect(`${base}/live?htmx=4`)])
  for (const tab of tabs) await next(tab, isClock, 'the stream to open')
  t.equal(app.sse.stats().connections, 2)
  await app.close()
  t.equal(app.sse.stats().connections, 0, 'close resolves with every stream ended')
  await Promise.all(tabs.map((tab) => tab.ended))
  t.pass('both clients saw their response end')
})
