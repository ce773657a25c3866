/**
 * The example app: one page, streamed to htmx 2 (`/`) or htmx 4 (`/?htmx=4`).
 *
 * Each tab opens ONE event stream, `/live`, which carries both kinds of events:
 * - its own: a clock (an async generator) and a button (pushed with `sink.send()`);
 * - shared ones, from topics every tab subscribes to: notes, the open-stream
 *   count, new jobs. `app.sse.publish()` renders each once for all tabs.
 * Messages name where they go with `<hx-partial hx-target>`, which htmx 2 and
 * htmx 4 both understand, so the same frames serve both. A running job has a
 * stream of its own, which it closes with a `done` event.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify'
import htmlSse, { type Broker, type SseSink, sseMessage } from '../lib/index.js'
import {
  Button,
  Clock,
  clockTime,
  FAVICON,
  type HtmxLine,
  type Job,
  JobCard,
  type Note,
  NoteForm,
  NoteItem,
  NoteList,
  Page,
  Partial,
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
}

interface PageQuery {
  htmx?: string
  lastEventId?: string
}

const HTMX_LINES: readonly HtmxLine[] = [2, 4]

function htmxLine(query: PageQuery): HtmxLine {
  return query.htmx === '4' ? 4 : 2
}

/** Sends a page or a fragment (`@kitajs/html` returns a promise only for async components). */
async function sendHtml(reply: FastifyReply, html: JSX.Element): Promise<FastifyReply> {
  return reply.type('text/html; charset=utf-8').send(await html)
}

/**
 * The per-tab clock, ten updates a second. `signal` (the sink's) ends it the
 * moment the tab goes: the pending sleep rejects and `finally` runs.
 */
async function* clock(signal: AbortSignal, log: FastifyBaseLogger) {
  let count = 0
  try {
    while (!signal.aborted) {
      count++
      yield sseMessage(
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
async function pushButton(sink: SseSink, htmx: HtmxLine): Promise<void> {
  for (let count = 1; ; count++) {
    // htmx 2 swaps a named event into the element with a matching `sse-swap`.
    // htmx 4 swaps only unnamed events (named ones become DOM events), so there
    // the same <Button> travels unnamed, in a partial.
    const sent =
      htmx === 2
        ? await sink.send(<Button count={count} />, 'button')
        : await sink.send(
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

function presenceMessage(count: number): JSX.Element {
  return (
    <Partial target="#presence">
      <Presence count={count} />
    </Partial>
  )
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
  await app.register(htmlSse, { broker: opts.broker, heartbeatMs: opts.heartbeatMs })

  // htmx posts forms as application/x-www-form-urlencoded.
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)))
  })

  const notes: Note[] = []
  const jobs = new Map<number, Job>()
  let lastJobId = opts.jobIdBase ?? 0
  // Aborted when the app closes: running jobs stop.
  const closing = new AbortController()

  app.get<{ Querystring: PageQuery }>('/', (request, reply) => {
    return sendHtml(
      reply,
      <Page
        htmx={htmxLine(request.query)}
        connections={app.sse.stats().connections}
        notes={notes}
        jobs={[...jobs.values()].reverse()}
        lastEventId={request.query.lastEventId}
      />
    )
  })

  app.get('/favicon.svg', (_request, reply) => {
    return reply.type('image/svg+xml').header('cache-control', 'public, max-age=86400').send(FAVICON)
  })
  app.get('/favicon.ico', (_request, reply) => reply.code(204).send())

  // The page stream: this tab's clock and button, and the shared topics.
  app.get<{ Querystring: PageQuery }>('/live', (request, reply) => {
    const htmx = htmxLine(request.query)
    // A function of the sink, so the generator can use `sink.signal`.
    const sink = reply.sse((sink) => clock(sink.signal, request.log), {
      // A job card holds an <SseSource>, whose attributes differ between the htmx lines.
      topics: ['notes', 'presence', `jobs:htmx${htmx}`]
    })
    void sink.send(presenceMessage(app.sse.stats().connections))
    void pushButton(sink, htmx)
  })

  app.post<{ Body: { text?: unknown } | undefined }>('/notes', async (request, reply) => {
    const text = String(request.body?.text ?? '')
      .trim()
      .slice(0, 280)
    if (text !== '') {
      const note: Note = { text, at: new Date() }
      notes.unshift(note)
      notes.length = Math.min(notes.length, 20)
      await app.sse.publish(
        'notes',
        <Partial target="#notes" swap="afterbegin">
          <NoteItem note={note} />
        </Partial>
      )
    }
    return sendHtml(reply, <NoteForm />)
  })

  // What a page refetches after a `reset`.
  app.get('/notes', (_request, reply) => sendHtml(reply, <NoteList notes={notes} />))

  app.post('/jobs', async (_request, reply) => {
    const id = ++lastJobId
    const job: Job = { id, percent: 0, lastEventId: '', startedAt: performance.now(), done: false }
    // The first event gives the card an id to resume from, so no step is missed.
    job.lastEventId = await app.sse.publish(`job:${id}`, <Progress id={id} percent={0} />)
    jobs.set(id, job)
    jobs.delete(id - 5)
    for (const htmx of HTMX_LINES) {
      await app.sse.publish(
        `jobs:htmx${htmx}`,
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
        job.lastEventId = await app.sse.publish(topic, <Progress id={job.id} percent={percent} seconds={seconds} />)
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
    if (opts.broker !== undefined && Number.isSafeInteger(id) && id > 0) {
      reply.sse({ topics: [`job:${id}`] })
      return
    }
    const job = jobs.get(id)
    if (job === undefined) {
      // Unknown or expired: tell the card to stop instead of letting it reconnect forever.
      reply.sse([sseMessage('', 'done')])
      return
    }
    reply.sse({ topics: [`job:${job.id}`] })
  })

  // The open-stream count, published to every tab when it changes.
  let connections = -1
  const presence = setInterval(() => {
    const now = app.sse.stats().connections
    if (now === connections) return
    connections = now
    app.sse.publish('presence', presenceMessage(now)).catch((err: unknown) => {
      app.log.warn({ err }, 'presence not published')
    })
  }, 500)
  presence.unref()

  app.addHook('preClose', (done) => {
    clearInterval(presence)
    closing.abort()
    done()
  })

  return app
}
