/** The progress watch's rules, without sockets: `judge` reads one check at a time. */
import { test } from 'tap'
import { judge, type Watch, type WatchLimits } from '../lib/watch.js'

const limits: WatchLimits = { maxBufferedBytes: 1000, writeTimeoutMs: 30_000, stallMs: 3000, windowMs: 2000 }

/** A watch begun at 0 with `written` bytes handed to a response that had none waiting. */
function begun(written: number): Watch {
  return {
    written,
    waitingAtStart: 0,
    flushed: 0,
    progressAt: 0,
    windowAt: 0,
    floor: Number.POSITIVE_INFINITY,
    lastFloor: Number.POSITIVE_INFINITY,
    rising: 0
  }
}

test('a reader that takes bytes in steps, seconds apart, is reading', async (t) => {
  const watch = begun(8000)
  // 8,000 bytes over the cap, taken 1,400 at a time every 2.5 s (a kernel's steps).
  let waiting = 8000
  for (let now = 250; now <= 15_000; now += 250) {
    if (now % 2500 === 0) waiting = Math.max(0, waiting - 1400)
    if (waiting === 0) break
    t.equal(judge(watch, now, waiting, waiting, limits), 'reading', `at ${now} ms, ${waiting} waiting`)
  }
})

test('over the cap with no byte accepted for stallMs: dropped', async (t) => {
  const watch = begun(5000)
  t.equal(judge(watch, 2750, 5000, 5000, limits), 'reading')
  t.equal(judge(watch, 3000, 5000, 5000, limits), 'dropped')
})

test('under the cap, a client that accepts nothing lasts until writeTimeoutMs', async (t) => {
  const watch = begun(500)
  t.equal(judge(watch, 29_750, 500, 500, limits), 'reading')
  t.equal(judge(watch, 30_000, 500, 500, limits), 'write_timeout')
})

test('a backlog whose low point rises over the cap two windows in a row: dropped', async (t) => {
  // 1,200 bytes waited when the watch began; the client takes 100 bytes every check while 300 more arrive.
  const watch = { ...begun(0), waitingAtStart: 1200 }
  let unsent = 1200
  let written = 0
  const verdicts: string[] = []
  for (let now = 250; now <= 8000; now += 250) {
    written += 300
    watch.written = written
    unsent += 200
    verdicts.push(judge(watch, now, unsent, unsent, limits))
    if (verdicts.at(-1) !== 'reading') break
  }
  t.equal(verdicts.at(-1), 'dropped')
  t.ok(verdicts.length >= 16, `not before two windows (${verdicts.length} checks)`)
})

test('a backlog that falls, however slowly, is never judged falling behind', async (t) => {
  const watch = begun(50_000)
  let unsent = 50_000
  for (let now = 250; now <= 60_000; now += 250) {
    // The client takes 10 bytes a check.
    unsent -= 10
    t.equal(judge(watch, now, unsent, unsent, limits), 'reading')
  }
})
