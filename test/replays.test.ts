/**
 * The resume decisions both log brokers share (lib/broker/shared/replays.ts),
 * without a store: an array stands for the log, and each query it is asked
 * waits until the test lets it answer, so the races a reconnect storm makes
 * (a resume joining a query already on its way) happen in a chosen order.
 * The brokers themselves run the same paths against Redis and PostgreSQL in
 * the contract suite.
 */
import { test } from 'tap'
import { type LogQueries, Replays } from '../lib/broker/shared/replays.js'
import { RecentWindow } from '../lib/broker/shared/window.js'
import { type BrokerEvent, compareIds, withId } from '../lib/broker/types.js'
import { deferred, until } from './helpers/sse.js'

const event = (n: number): BrokerEvent => ({ id: `1-${n}`, topic: 't', frame: withId(`1-${n}`, `<p>${n}</p>`) })
const ids = (events: readonly BrokerEvent[]) => events.map((e) => e.id)
const run = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `1-${from + i}`)

/** A log of `stored` events whose queries answer when `answer()` is called, and are counted. */
function log(stored: number, replay = 100) {
  const events = Array.from({ length: stored }, (_, i) => event(i + 1))
  const held: Array<() => void> = []
  const asked: string[] = []
  const hold = async <T>(what: string, value: () => T): Promise<T> => {
    asked.push(what)
    const gate = deferred()
    held.push(gate.resolve)
    await gate.promise
    return value()
  }
  const reader = { running: false, position: '0-0', current: () => false }
  const queries: LogQueries = {
    reader,
    window: new RecentWindow(replay + 1),
    replay,
    owns: (id) => /^1-\d+$/.test(id),
    exists: (id) => hold(`exists ${id}`, () => events.some((e) => e.id === id)),
    range: (lastId, bound) =>
      hold(`range ${lastId} ${bound}`, () => {
        const at = events.findIndex((e) => e.id === lastId)
        if (at === -1) return null
        // Up to the bound, or to the head the store has when the query runs.
        return events.slice(at + 1).filter((e) => bound === null || compareIds(e.id, bound) <= 0)
      }),
    head: () => hold('head', () => events.at(-1)?.id ?? '1-0')
  }
  return {
    events,
    reader,
    queries,
    asked,
    /** Lets every held query answer. */
    answer: () => {
      for (const release of held.splice(0)) release()
    },
    /** The reader delivered up to event `n`: its position, and the window holds what it delivered. */
    deliver(from: number, to: number) {
      reader.running = true
      for (let n = from; n <= to; n++) queries.window.push(events[n - 1] as BrokerEvent)
      reader.position = `1-${to}`
    }
  }
}

/** Waits until the log was asked `n` queries. */
function asked(l: { asked: string[] }, n: number): Promise<void> {
  return until(() => l.asked.length >= n, 5000, `${n} queries asked of the log`)
}

test('concurrent resumes of one id share one range query, bounded at the reader position', async (t) => {
  const l = log(10)
  l.reader.running = true
  l.reader.position = '1-8'
  const replays = new Replays(l.queries)
  const all = [replays.replay(['t'], '1-2'), replays.replay(['t'], '1-2'), replays.replay(['t'], '1-2')]
  await asked(l, 1)
  l.answer()
  for (const answer of await Promise.all(all)) {
    t.same(answer.found && ids(answer.events), run(3, 8), 'the events after the id, up to the position')
  }
  t.same(l.asked, ['range 1-2 1-8'], 'one query for the three')
})

test('a resume that joins a query sent before the reader ran asks again, up to its own bound', async (t) => {
  const l = log(10)
  const replays = new Replays(l.queries)
  // The reader does not run yet: the first resume asks up to the store's head.
  const early = replays.replay(['t'], '1-3')
  await asked(l, 1)
  // The reader starts at 1-6; 7 to 10 will reach streams live.
  l.reader.running = true
  l.reader.position = '1-6'
  const late = replays.replay(['t'], '1-3')
  l.answer()
  await asked(l, 2)
  l.answer()
  const [first, second] = await Promise.all([early, late])
  t.same(first.found && ids(first.events), run(4, 10), 'the early resume has no bound: up to the head')
  t.same(second.found && ids(second.events), run(4, 6), 'the late one ends at its bound: 7 to 10 come live, once')
  t.same(l.asked, ['range 1-3 null', 'range 1-3 1-6'], 'it asked again with its bound')
})

test('a resume that joins a query sent at an earlier position takes the rest from the window', async (t) => {
  const l = log(12)
  const replays = new Replays(l.queries)
  l.deliver(5, 8)
  const first = replays.replay(['t'], '1-2')
  await asked(l, 1)
  // The reader delivers 9 and 10 while the query is on its way; the window holds them.
  l.deliver(9, 10)
  const second = replays.replay(['t'], '1-2')
  l.answer()
  const [a, b] = await Promise.all([first, second])
  t.same(a.found && ids(a.events), run(3, 8), 'the first ends at the position it was sent at')
  t.same(b.found && ids(b.events), run(3, 10), 'the second gets the same query and the window up to its own position')
  t.same(l.asked, ['range 1-2 1-8'], 'one query')
})

test('an id newer than the position only has to exist: concurrent checks share one query', async (t) => {
  const l = log(10)
  l.deliver(1, 4)
  const replays = new Replays(l.queries)
  const checks = [replays.replay(['t'], '1-7'), replays.replay(['t'], '1-7'), replays.replay(['t'], '1-42')]
  await asked(l, 2)
  l.answer()
  const [a, b, gone] = await Promise.all(checks)
  t.same(
    [a, b],
    [
      { found: true, events: [] },
      { found: true, events: [] }
    ],
    'its events come live: nothing to replay'
  )
  t.same(gone, { found: false, head: '1-4' }, 'an id that is not in the log is a reset at the position')
  t.same(l.asked.filter((q) => q === 'exists 1-7').length, 1, 'one check for the two resumes of 1-7')
})

test('what the window holds needs no query; an unknown id is a reset at the head when the reader is not running', async (t) => {
  const l = log(6)
  l.deliver(1, 6)
  const replays = new Replays(l.queries)
  const from = await replays.replay(['t', 'other'], '1-4')
  t.same(from.found && ids(from.events), run(5, 6), 'from the window')
  t.same(await replays.replay(['t'], '1-6'), { found: true, events: [] }, 'the position itself: nothing to replay')
  l.reader.running = false
  const reset = replays.replay(['t'], 'garbage')
  await asked(l, 1)
  l.answer()
  t.same(await reset, { found: false, head: '1-6' }, 'the store says where the log ends')
  t.same(l.asked, ['head'], 'only the head was asked')
})
