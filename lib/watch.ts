/**
 * The progress watch behind `maxBufferedBytes` and `writeTimeoutMs`: is a
 * client with bytes waiting still reading? `judge` is the rule, pure; `Watcher`
 * runs it on a timer over the streams that have bytes waiting.
 *
 * Progress is judged in bytes the socket accepted. A kernel takes a slow
 * reader's bytes in steps (on loopback about 1.4 MB at a time, when a third of
 * its send buffer frees up), and a large write completes only when its last
 * byte is taken, so large frames go out in slices (see `SLICE_BYTES` in
 * `sink.ts`) and the rules allow for steps seconds apart.
 */

/** What the watch remembers of a stream whose bytes wait. */
export interface Watch {
  /** Bytes handed to the response since the watch began. */
  written: number
  /** The response's unsent bytes when the watch began. */
  waitingAtStart: number
  /** Bytes known flushed since the watch began, at the last progress. */
  flushed: number
  /** When bytes last moved. */
  progressAt: number
  /** When the current trend window began. */
  windowAt: number
  /** The fewest unsent bytes seen in the current window. */
  floor: number
  /** The floor of the previous window (Infinity before the first ends). */
  lastFloor: number
  /** Windows in a row whose floor rose over `maxBufferedBytes`. */
  rising: number
}

/** What the watch judges by. */
export interface WatchLimits {
  maxBufferedBytes: number
  /** 0: never. */
  writeTimeoutMs: number
  /** Over `maxBufferedBytes` with no byte accepted this long: the client stopped reading. */
  stallMs: number
  /** The trend window: a backlog whose floor rises two windows in a row cannot catch up. */
  windowMs: number
}

/** What the watch concludes at one check. */
export type Verdict = 'reading' | 'dropped' | 'write_timeout'

/** How often streams with unsent bytes are checked, at most. */
const WATCH_MS = 250
/** Over `maxBufferedBytes`, no byte accepted for this long: stopped. It outlasts a kernel's step at 1 MB/s. */
const STALL_MS = 3000
/** The trend window. */
const WINDOW_MS = 2000

/** The limits for the plugin's options. */
export function watchLimits(maxBufferedBytes: number, writeTimeoutMs: number): WatchLimits {
  return {
    maxBufferedBytes,
    writeTimeoutMs,
    stallMs: writeTimeoutMs > 0 ? Math.min(STALL_MS, writeTimeoutMs) : STALL_MS,
    windowMs: WINDOW_MS
  }
}

/** A new watch of a response that had `waiting` unsent bytes at `now`. */
export function startWatch(now: number, waiting: number): Watch {
  return {
    written: 0,
    waitingAtStart: waiting,
    flushed: 0,
    progressAt: now,
    windowAt: now,
    floor: Number.POSITIVE_INFINITY,
    lastFloor: Number.POSITIVE_INFINITY,
    rising: 0
  }
}

/**
 * Updates `watch` with one check's reading (`waiting`: the response's unsent
 * bytes; `unsent`: those and the stream's own queue) and says whether the
 * client still reads:
 * - over `maxBufferedBytes` with no byte accepted for `stallMs`: it stopped;
 * - over it, with the backlog's low point rising two windows in a row: it
 *   reads slower than the stream and cannot catch up;
 * - no byte accepted for `writeTimeoutMs`: stalled (a half-open connection).
 * Chunked encoding adds bytes that were never counted as written, so while
 * nothing moves `flushed` only falls: it never shows progress that did not happen.
 */
export function judge(watch: Watch, now: number, waiting: number, unsent: number, limits: WatchLimits): Verdict {
  const flushed = watch.written - (waiting - watch.waitingAtStart)
  if (flushed > watch.flushed) {
    watch.flushed = flushed
    watch.progressAt = now
  }
  const idleMs = now - watch.progressAt
  const over = unsent > limits.maxBufferedBytes
  if (over && idleMs >= limits.stallMs) return 'dropped'
  if (unsent < watch.floor) watch.floor = unsent
  if (now - watch.windowAt >= limits.windowMs) {
    const rose = watch.floor > limits.maxBufferedBytes && watch.floor > watch.lastFloor
    watch.rising = rose ? watch.rising + 1 : 0
    watch.lastFloor = watch.floor
    watch.floor = unsent
    watch.windowAt = now
    if (watch.rising >= 2) return 'dropped'
  }
  if (limits.writeTimeoutMs > 0 && idleMs >= limits.writeTimeoutMs) return 'write_timeout'
  return 'reading'
}

/** What the watcher checks: a stream that says whether it still needs watching. */
export interface Watched {
  check(now: number, limits: WatchLimits): boolean
}

/** Checks the streams that have bytes waiting, on one timer that runs only while there are some. */
export class Watcher {
  readonly #watched = new Set<Watched>()
  readonly #limits: WatchLimits
  readonly #everyMs: number
  #timer: NodeJS.Timeout | null = null

  constructor(limits: WatchLimits) {
    this.#limits = limits
    // Checks often enough that writeTimeoutMs is kept to within a quarter of it.
    this.#everyMs =
      limits.writeTimeoutMs > 0 ? Math.max(5, Math.min(WATCH_MS, Math.floor(limits.writeTimeoutMs / 4))) : WATCH_MS
  }

  add(stream: Watched): void {
    this.#watched.add(stream)
    if (this.#timer !== null) return
    this.#timer = setInterval(this.#check, this.#everyMs)
    this.#timer.unref()
  }

  readonly #check = (): void => {
    const now = Date.now()
    for (const stream of this.#watched) {
      if (!stream.check(now, this.#limits)) this.#watched.delete(stream)
    }
    if (this.#watched.size === 0) this.stop()
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
  }
}
