/**
 * The example app: one page, on htmx 2 (`/`) or htmx 4 (`/?htmx=4`).
 *
 * Each tab opens ONE event stream, `/live`, which carries both kinds of events:
 * - its own: a clock (an async generator) and a button (pushed with `sink.send()`);
 * - shared ones, from topics every tab subscribes to: notes, the open-tab count,
 *   new jobs. `app.sse.publish()` renders each once for all tabs.
 * Every message names where it goes with `<Partial target>`, which htmx 2 and
 * htmx 4 both understand, so the same frames serve both. A running job has a
 * stream of its own, which it closes with a `done` event.
 *
 * App state: the open-tab count is `app.sse.presence()`, right across every
 * instance sharing the broker; job progress is keyed, so a card that resumes
 * gets the newest step only; each browser is a `member` (a cookie), and "sign
 * out everywhere" ends its streams on every instance with `app.sse.disconnect()`.
 */
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import formbody from '@fastify/formbody'
import { fastifyKitaHtml } from '@kitajs/fastify-html-plugin'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify'
import htmlSse, { type Broker, type SseSink, sseMessage } from 'fastify-html-sse'
import { Partial } from 'fastify-html-sse/components'
import { HTMX_LINES, type Htmx, htmxOf } from './htmx.js'
// Sets the global MeterProvider, which the plugin takes its meter from when it registers.
import { prometheusText } from './metrics.js'
import { memoryNotes, type NoteStore } from './notes.js'
import {
  Button,
  Clock,
  clockTime,
  FAVICON,
  type Job,
  JobCard,
  type Note,
  NoteForm,
  NoteItem,
  NoteList,
  Page,
  Presence,
  Progress
} from './views.js'

export interface BuildAppOptions {
  /** Fastify's `logger` option. @default false */
  logger?: boolean | object
  /** Where published events travel (Redis, for several instances). @default memoryBroker() */
  broker?: Broker
  /** @default 15000 */
  heartbeatMs?: number
  /** Job ids start after this; instances sharing a broker use disjoint ranges. @default 0 */
  jobIdBase?: number
  /** Where notes live: rows of PostgreSQL with `postgresNotes(pool)` (and `postgresBroker`). @default memoryNotes() */
  notes?: NoteStore
}

interface PageQuery {
  htmx?: string
  /** `/?lastEventId=stale` shows what a page does when its stream cannot resume. */
  lastEventId?: string
}

/** Presence shares a change within 200 ms: the count is read this long after an open or close. */
const PRESENCE_SETTLE_MS = 300
/** Each step of a job replaces the last: a card that resumes needs the newest only. */
const PROGRESS = { key: 'progress' }

/** The cookie that makes a browser one `member`: all its tabs are signed out together. */
const MEMBER_COOKIE = 'example_member'
const MEMBER = /^[0-9a-f-]{36}$/

/** The browser's member id, from its cookie, or undefined. */
function memberOf(request: FastifyRequest): string | undefined {
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const [name, value] = part.trim().split('=')
    if (name === MEMBER_COOKIE && value !== undefined && MEMBER.test(value)) return value
  }
  return undefined
}

/** A job card holds an <SseSource>, whose markup differs between the htmx lines. */
const jobsTopic = (htmx: Htmx) => `jobs:htmx${htmx}`

/**
 * The per-tab clock, ten updates a second. `signal` (the sink's) ends it the
 * moment the tab goes: the pending sleep rejects and `finally` runs.
 */
async function* clock(signal: AbortSignal, log: FastifyBaseLogger) {
  let count = 0
  try {
    while (!signal.aborted) {
      count++
      yield (
        <Partial target="#clock">
          <Clock count={count} time={clockTime()} />
        </Partial>
      )
      await sleep(100, undefined, { signal })
    }
  } finally {
    log.info({ updates: count }, 'clock stopped')
  }
}

/** The per-tab button, once a second, until the stream closes (`send` resolves false). */
async function pushButton(sink: SseSink): Promise<void> {
  for (let count = 1; ; count++) {
    const sent = await sink.send(
      <Partial target="#button">
        <Button count={count} />
      </Partial>
    )
    if (!sent) return
    try {
      await sleep(1000, undefined, { signal: sink.signal })
    } catch {
      return
    }
  }
}

/**
 * Builds the example app (not listening yet).
 *
 * @example
 * ```ts
 * const app = await buildApp({ logger: true })
 * await app.listen({ port: 3000 })
 * ```
 */
export async function buildApp(opts: BuildAppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({ logger: opts.logger ?? false })
  await app.register(formbody)
  await app.register(fastifyKitaHtml)
  await app.register(htmlSse, { broker: opts.broker, heartbeatMs: opts.heartbeatMs })

  const notes = opts.notes ?? memoryNotes()
  const jobs = new Map<number, Job>()
  let lastJobId = opts.jobIdBase ?? 0
  // Aborted when the app closes: running jobs stop, presence goes quiet.
  const closing = new AbortController()

  app.get<{ Querystring: PageQuery }>('/', async (request, reply) => {
    const htmx = htmxOf(request.query)
    // The notes and the id they are current at: the page stream resumes from there.
    const page = await notes.page(app.sse)
    const { streams: tabs } = await app.sse.presence('presence')
    const state = { tabs, notes: page.notes, jobs: [...jobs.values()].reverse() }
    const lastEventId = request.query.lastEventId ?? page.lastEventId
    if (memberOf(request) === undefined) {
      reply.header('set-cookie', `${MEMBER_COOKIE}=${randomUUID()}; Path=/; HttpOnly; SameSite=Lax`)
    }
    return reply.html(<Page htmx={htmx} lastEventId={lastEventId} {...state} />)
  })

  app.get('/favicon.svg', (_request, reply) => {
    return reply.type('image/svg+xml').header('cache-control', 'public, max-age=86400').send(FAVICON)
  })
  app.get('/favicon.ico', (_request, reply) => reply.code(204).send())

  /**
   * Publishes the open-tab count of every instance when it changed. Presence
   * follows opens and closes within about a second, so this looks a moment after
   * each local one, and every few seconds for an instance that died. Keyed: a
   * tab that resumes gets the newest count only.
   */
  let shownTabs = -1
  let presenceCheck: NodeJS.Timeout | null = null
  async function publishPresence(): Promise<void> {
    presenceCheck = null
    if (closing.signal.aborted) return
    const { streams } = await app.sse.presence('presence')
    if (streams === shownTabs || closing.signal.aborted) return
    shownTabs = streams
    const message = (
      <Partial target="#presence">
        <Presence count={streams} />
      </Partial>
    )
    await app.sse.publish('presence', message, 'message', { key: 'tabs' })
  }
  const checkPresence = (ms: number) => {
    if (presenceCheck !== null) return
    presenceCheck = setTimeout(() => {
      publishPresence().catch((err: unknown) => app.log.warn({ err }, 'presence not published'))
    }, ms)
    presenceCheck.unref()
  }
  const presenceSweep = setInterval(() => checkPresence(0), 5000)
  presenceSweep.unref()

  // The page stream: this tab's clock and button, and the shared topics.
  app.get<{ Querystring: PageQuery }>('/live', (request, reply) => {
    // A function of the sink, so the generator can use `sink.signal`.
    const sink = reply.sse((sink) => clock(sink.signal, request.log), {
      topics: ['notes', 'presence', jobsTopic(htmxOf(request.query))],
      member: memberOf(request)
    })
    checkPresence(PRESENCE_SETTLE_MS)
    void sink.closed.then(() => checkPresence(PRESENCE_SETTLE_MS))
    void pushButton(sink)
  })

  // Every tab of this browser, on every instance, gets `revoked` and stops (`<SseSource close="revoked">`).
  app.post('/signout', async (request, reply) => {
    const member = memberOf(request)
    if (member !== undefined) await app.sse.disconnect({ member })
    return reply.code(204).send()
  })

  app.post<{ Body: { text?: string } }>('/notes', async (request, reply) => {
    const text = String(request.body?.text ?? '')
      .trim()
      .slice(0, 280)
    if (text !== '') {
      const note: Note = { text, at: new Date() }
      await notes.add(
        app.sse,
        note,
        <Partial target="#notes" swap="afterbegin">
          <NoteItem note={note} />
        </Partial>
      )
    }
    // A fresh, empty form; the note itself arrives over the stream, in every tab.
    return reply.html(<NoteForm />)
  })

  // What a page refetches after a `reset`.
  app.get('/notes', async (_request, reply) => reply.html(<NoteList notes={await notes.list()} />))

  app.post('/jobs', async (_request, reply) => {
    const id = ++lastJobId
    const job: Job = { id, percent: 0, lastEventId: '', startedAt: performance.now(), done: false }
    // The first event gives the card an id to resume from, so no step is missed.
    job.lastEventId = await app.sse.publish(`job:${id}`, <Progress id={id} percent={0} />, 'message', PROGRESS)
    jobs.set(id, job)
    jobs.delete(id - 5)
    for (const htmx of HTMX_LINES) {
      await app.sse.publish(
        jobsTopic(htmx),
        <Partial target="#jobs" swap="afterbegin">
          <JobCard job={job} htmx={htmx} />
        </Partial>
      )
    }
    void runJob(job)
    return reply.code(204).send()
  })

  async function runJob(job: Job): Promise<void> {
    const topic = `job:${job.id}`
    try {
      while (job.percent < 100) {
        await sleep(150, undefined, { signal: closing.signal })
        const percent = job.percent + 5
        const seconds = percent === 100 ? (performance.now() - job.startedAt) / 1000 : undefined
        job.lastEventId = await app.sse.publish(
          topic,
          <Progress id={job.id} percent={percent} seconds={seconds} />,
          'message',
          PROGRESS
        )
        job.percent = percent
        job.seconds = seconds
      }
      // The card closes its stream on this event (`sse-close` / `hx-sse:close`).
      job.lastEventId = await app.sse.publish(topic, '', 'done')
      job.done = true
    } catch (err) {
      if (!closing.signal.aborted) app.log.error({ err, job: job.id }, 'job failed')
    }
  }

  // A job's own stream: what it missed since Last-Event-ID (header or query), then live steps.
  app.get<{ Params: { id: string } }>('/jobs/:id/events', (request, reply) => {
    const id = Number(request.params.id)
    // With a shared broker the job may run on another instance: its steps arrive through the topic.
    const known = opts.broker === undefined ? jobs.has(id) : Number.isSafeInteger(id) && id > 0
    // Unknown or expired: tell the card to stop instead of letting it reconnect forever.
    if (!known) reply.sse([sseMessage('', 'done')])
    else reply.sse({ topics: [`job:${id}`] })
  })

  app.get('/metrics', async (_request, reply) => {
    return reply.type('text/plain; version=0.0.4; charset=utf-8').send(await prometheusText())
  })

  app.addHook('preClose', (done) => {
    closing.abort()
    clearInterval(presenceSweep)
    if (presenceCheck !== null) clearTimeout(presenceCheck)
    done()
  })

  return app
}
