/**
 * The example's page and the components the server streams into it.
 * Every component is a plain function of its props: what the page renders at
 * load and what a stream sends later are the same markup.
 */
import type { PropsWithChildren } from '@kitajs/html'
import { HtmxScripts, SseSource } from 'fastify-html-sse/components'
import { describeHtmx, HTMX_LINES, type Htmx, onStreamEvent, pagePath } from './htmx.js'

export interface Note {
  text: string
  at: Date
}

export interface Job {
  id: number
  percent: number
  /** The id of the job's latest event: a card rendered now resumes its stream from here. */
  lastEventId: string
  startedAt: number
  /** Set with the last step. */
  seconds?: number
  /** The `done` event is published: nothing more will come. */
  done: boolean
}

/** `HH:MM:SS.ffffff`: microseconds, so the drift of a 100 ms loop shows. */
export function clockTime(): string {
  const ms = performance.timeOrigin + performance.now()
  const micros = Math.floor((ms % 1000) * 1000)
  return `${new Date(ms).toTimeString().slice(0, 8)}.${String(micros).padStart(6, '0')}`
}

export function Clock({ count, time }: { count: number; time: string }): JSX.Element {
  return <span safe>{`Update #${count} ${time}`}</span>
}

export function Button({ count }: { count: number }): JSX.Element {
  return (
    <button type="button" class="tick">
      Pushed <b>{count}</b> {count === 1 ? 'time' : 'times'}
    </button>
  )
}

export function Presence({ count }: { count: number }): JSX.Element {
  return (
    <>
      {count} open {count === 1 ? 'tab' : 'tabs'}
    </>
  )
}

export function NoteItem({ note }: { note: Note }): JSX.Element {
  return (
    <li>
      <p safe>{note.text}</p>
      <time datetime={note.at.toISOString()} safe>
        {note.at.toTimeString().slice(0, 8)}
      </time>
    </li>
  )
}

export function NoteList({ notes }: { notes: readonly Note[] }): JSX.Element {
  return (
    <ul id="notes" class="notes">
      {notes.map((note) => (
        <NoteItem note={note} />
      ))}
    </ul>
  )
}

export function NoteForm(): JSX.Element {
  // The response is a fresh, empty form; the note itself arrives over the stream, in every tab.
  return (
    <form class="row" hx-post="/notes" hx-swap="outerHTML">
      <input name="text" placeholder="Write a note…" maxlength="280" required autocomplete="off" aria-label="Note" />
      <button type="submit" class="primary">
        Publish
      </button>
    </form>
  )
}

export function Progress({ id, percent, seconds }: { id: number; percent: number; seconds?: number }): JSX.Element {
  return (
    <>
      <div class="job-head">
        <strong>Job #{id}</strong>
        <span safe>{seconds === undefined ? `${percent}%` : `Done in ${seconds.toFixed(1)} s`}</span>
      </div>
      <div
        class={seconds === undefined ? 'meter' : 'meter done'}
        role="progressbar"
        aria-valuemin="0"
        aria-valuemax="100"
        aria-valuenow={String(percent)}
      >
        <div style={`width: ${percent}%`}></div>
      </div>
    </>
  )
}

/** A job: a finished one is static; a running one streams its progress from what it shows, and stops on `done`. */
export function JobCard({ job, htmx }: { job: Job; htmx: Htmx }): JSX.Element {
  const progress = <Progress id={job.id} percent={job.percent} seconds={job.seconds} />
  if (job.done) return <article class="job">{progress}</article>
  return (
    <SseSource url={`/jobs/${job.id}/events`} lastEventId={job.lastEventId} close="done" htmx={htmx} class="job">
      {progress}
    </SseSource>
  )
}

function Card({ title, tag, hint, children }: PropsWithChildren<{ title: string; tag: string; hint: string }>) {
  return (
    <section class="card">
      <h2>
        <span safe>{title}</span>
        <code class="tag" safe>
          {tag}
        </code>
      </h2>
      <p class="hint" safe>
        {hint}
      </p>
      {children}
    </section>
  )
}

export interface PageProps {
  htmx: Htmx
  /** Open tabs, as rendered; the stream keeps it current. */
  tabs: number
  notes: readonly Note[]
  jobs: readonly Job[]
  /** Where the page stream resumes: the id this state was rendered at. */
  lastEventId: string | null
}

export function Page({ htmx, tabs, notes, jobs, lastEventId }: PageProps): JSX.Element {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>fastify-html-sse · htmx {htmx}</title>
        <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
        <style>{CSS}</style>
        <HtmxScripts htmx={htmx} />
      </head>
      <body>
        {/* One event stream per tab: over HTTP/1.1 a browser opens at most six
            connections per host, for all its tabs together. It resumes from the
            moment this page was rendered, so nothing published meanwhile is lost. */}
        <SseSource url={`/live?htmx=${htmx}`} lastEventId={lastEventId} htmx={htmx} close="revoked" id="live">
          <header class="top">
            <div class="bar">
              <a class="brand" href={pagePath(htmx)}>
                {LOGO}
                <span>
                  fastify-html-sse <small>example</small>
                </span>
              </a>
              <span class="spacer"></span>
              <span class="pill" id="presence">
                <Presence count={tabs} />
              </span>
              {/* Ends this browser's streams in every tab, on every instance: each gets `revoked` and stops. */}
              <button type="button" class="pill" hx-post="/signout" hx-swap="none">
                Sign out everywhere
              </button>
              <nav class="switch" aria-label="htmx version">
                {HTMX_LINES.map((line) => (
                  <a href={pagePath(line)} aria-current={line === htmx ? 'page' : undefined}>
                    htmx {line}
                  </a>
                ))}
              </nav>
            </div>
          </header>
          <main>
            <div class="intro">
              <h1>Live HTML over Server-Sent Events</h1>
              <p>
                Rendered with JSX on the server, streamed to htmx {htmx} over one event stream per tab. Open a second
                tab to watch the shared parts move together.
              </p>
            </div>
            <div class="grid">
              <Card
                title="Per-tab clock"
                tag="reply.sse(generator)"
                hint="Each tab gets its own async generator: ten updates a second. Close the tab and it stops at once."
              >
                <div id="clock" class="clock">
                  Connecting…
                </div>
              </Card>
              <Card
                title="Server-rendered button"
                tag="sink.send()"
                hint="A <Button> component pushed to this tab alone, once a second, into its slot with a <Partial>."
              >
                <div id="button" class="button-slot">
                  <Button count={0} />
                </div>
              </Card>
              <Card
                title="Notes"
                tag="topic: notes"
                hint="Publishing renders the note once and sends the same bytes to every open tab."
              >
                <NoteForm />
                {/* When the stream cannot resume (after a restart, say) it sends `reset`
                    first: refetch the list. */}
                <div hx-get="/notes" hx-trigger={onStreamEvent(htmx, 'reset', '#live')}>
                  <NoteList notes={notes} />
                </div>
              </Card>
              <Card
                title="Jobs"
                tag="topic: job:<id>"
                hint="A job publishes its progress on its own topic. Every tab shows it; a late one resumes from Last-Event-ID."
              >
                <button type="button" class="primary" hx-post="/jobs" hx-swap="none">
                  Start a 3-second job
                </button>
                <div id="jobs" class="jobs">
                  {jobs.map((job) => (
                    <JobCard job={job} htmx={htmx} />
                  ))}
                </div>
              </Card>
            </div>
            <footer safe>{`${describeHtmx(htmx)}, served by the plugin from /fastify-html-sse/. No CDN.`}</footer>
          </main>
        </SseSource>
      </body>
    </html>
  )
}

const LOGO = (
  <svg width="28" height="28" viewBox="0 0 32 32" aria-hidden="true">
    <rect width="32" height="32" rx="8" fill="#0f766e" />
    <path
      d="M7 17h4l3-7 4 13 3-6h4"
      fill="none"
      stroke="#fff"
      stroke-width="2.6"
      stroke-linecap="round"
      stroke-linejoin="round"
    />
  </svg>
)

/** The favicon: the logo as a standalone SVG document. */
export const FAVICON = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="8" fill="#0f766e"/><path d="M7 17h4l3-7 4 13 3-6h4" fill="none" stroke="#fff" stroke-width="2.6" stroke-linecap="round" stroke-linejoin="round"/></svg>`

const CSS = `
:root {
  --bg: #f4f6f8; --card: #fff; --ink: #101828; --muted: #667085; --line: #e4e7ec;
  --accent: #0f766e; --accent-ink: #fff; --soft: #f2f4f7;
  --mono: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, monospace;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.top { background: var(--card); border-bottom: 1px solid var(--line); }
.bar, main { max-width: 1080px; margin: 0 auto; padding-left: 24px; padding-right: 24px; }
.bar { display: flex; align-items: center; gap: 14px; padding-top: 12px; padding-bottom: 12px; }
.brand { display: flex; align-items: center; gap: 10px; color: inherit; text-decoration: none; font-weight: 650; }
.brand small { color: var(--muted); font-weight: 450; margin-left: 4px; }
.spacer { flex: 1; }
.pill { display: inline-flex; align-items: center; gap: 7px; padding: 4px 11px; border-radius: 999px;
  background: #ecfdf3; color: #067647; font-size: 13px; font-weight: 500; }
.pill::before { content: ""; width: 7px; height: 7px; border-radius: 50%; background: #17b26a;
  box-shadow: 0 0 0 3px #d1fadf; }
.switch { display: inline-flex; border: 1px solid var(--line); border-radius: 9px; padding: 2px; background: var(--soft); }
.switch a { padding: 4px 12px; border-radius: 7px; font-size: 13px; color: var(--muted); text-decoration: none; }
.switch a[aria-current="page"] { background: var(--card); color: var(--ink); font-weight: 600;
  box-shadow: 0 1px 2px rgb(16 24 40 / 0.1); }
main { padding-top: 32px; padding-bottom: 40px; }
.intro h1 { margin: 0 0 6px; font-size: 26px; letter-spacing: -0.01em; }
.intro p { margin: 0 0 26px; color: var(--muted); max-width: 62ch; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 20px; align-items: start; }
@media (max-width: 760px) { .grid { grid-template-columns: 1fr; } }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 14px; padding: 20px 22px 22px;
  box-shadow: 0 1px 2px rgb(16 24 40 / 0.04); }
.card h2 { display: flex; align-items: center; justify-content: space-between; gap: 8px; margin: 0 0 4px; font-size: 16px; }
.tag { white-space: nowrap; font: 500 11.5px var(--mono); background: var(--soft); color: #475467; padding: 2px 7px; border-radius: 6px; }
.hint { margin: 0 0 16px; color: var(--muted); font-size: 13.5px; min-height: 3em; }
.clock { font: 600 19px var(--mono); font-variant-numeric: tabular-nums; padding: 16px 18px; border-radius: 10px;
  background: #0b1220; color: #99f6e4; white-space: nowrap; overflow: hidden; }
.button-slot { padding: 6px 0; }
button { font: inherit; cursor: pointer; }
.tick { padding: 11px 18px; border: 1px solid var(--line); border-radius: 10px; background: var(--card);
  color: var(--ink); font-weight: 500; box-shadow: 0 1px 2px rgb(16 24 40 / 0.06); }
.tick b { display: inline-block; min-width: 2.2ch; padding: 0 6px; margin: 0 2px; border-radius: 6px;
  background: var(--accent); color: var(--accent-ink); font-variant-numeric: tabular-nums; }
.primary { padding: 9px 16px; border: 0; border-radius: 9px; background: var(--accent); color: var(--accent-ink);
  font-weight: 600; }
.primary:hover { filter: brightness(1.08); }
.row { display: flex; gap: 8px; }
.row input { flex: 1; min-width: 0; padding: 9px 12px; border: 1px solid #d0d5dd; border-radius: 9px; font: inherit; }
.row input:focus { outline: 2px solid #99f6e4; border-color: var(--accent); }
.notes { list-style: none; margin: 14px 0 0; padding: 0; }
.notes:empty::before { content: "No notes yet."; color: var(--muted); font-size: 13.5px; }
.notes li { display: flex; align-items: baseline; gap: 12px; padding: 9px 0; border-top: 1px solid var(--line); }
.notes li:nth-child(n + 7) { display: none; }
.notes p { flex: 1; margin: 0; overflow-wrap: anywhere; }
.notes time { color: var(--muted); font: 12px var(--mono); }
.jobs { margin-top: 6px; }
.jobs > :nth-child(n + 5) { display: none; }
.job { margin-top: 10px; padding: 11px 13px; border: 1px solid var(--line); border-radius: 10px; }
.job-head { display: flex; justify-content: space-between; font-size: 13.5px; }
.job-head span { color: var(--muted); font-variant-numeric: tabular-nums; }
.meter { height: 8px; margin-top: 8px; border-radius: 99px; background: var(--soft); overflow: hidden; }
.meter > div { height: 100%; border-radius: 99px; background: var(--accent); }
.meter.done > div { background: #17b26a; }
footer { margin-top: 28px; color: var(--muted); font-size: 12.5px; text-align: center; }
`
