// Statistics and bookkeeping shared by every scenario: its start (flags, lock,
// build), medians and pairing (see "Noise, one method" in bench/README.md), the
// CPU account, machine facts, writing the JSON.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { buildOurs, HERE, lock } from './harness.mjs'

let run = null
/**
 * Start scenario `name`: its flags (`--key value`; a number default makes a number), the lock, the private
 * build. Returns { o: the flags, ours: { dir, commit }, log, command }.
 */
export async function scenario(name, defaults = {}) {
  const options = Object.fromEntries(Object.entries(defaults).map(([k, v]) => [k, { type: 'string', default: `${v}` }]))
  const { values } = parseArgs({ options })
  const o = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, typeof defaults[k] === 'number' ? +v : v]))
  const t0 = Date.now()
  await lock()
  const env = ['BENCH_REF', 'BENCH_OURS_DIR'].flatMap((k) => (process.env[k] ? [`${k}=${process.env[k]} `] : []))
  run = {
    t0,
    command: `${env.join('')}node bench/${name}.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    ours: buildOurs()
  }
  return { o, ours: run.ours, log: logger(name), command: run.command }
}

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return null
  const m = v.length >> 1
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}

/** The median of the per-pair ratios a[i] / b[i]. */
export const ratio = (a, b) => median(a.map((v, i) => v / b[i]))

/** q-quantile of a sorted array. */
export function quantile(sorted, q) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}

/**
 * [await fn(0), …, await fn(sides - 1)], each round starting at another side
 * (two sides: 0 then 1 on even rounds, 1 then 0 on odd ones), so drift hits all.
 */
export async function paired(round, fn, sides = 2) {
  const out = []
  for (let j = 0; j < sides; j++) {
    const i = (j + round) % sides
    out[i] = await fn(i)
  }
  return out
}

/** Total busy CPU time of the machine (ms), from /proc/stat. */
function machineBusyMs() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number)
  return ((f[0] + f[1] + f[2] + f[5] + f[6]) * 1000) / 100
}

/** Start a CPU account: `.end(ownMs)` gives the CPUs other processes used meanwhile (ownMs: our processes' CPU). */
export function cpuAccount() {
  const t0 = performance.now()
  const busy0 = machineBusyMs()
  const self0 = process.cpuUsage()
  return {
    end(ownMs) {
      const self = process.cpuUsage(self0)
      const other = machineBusyMs() - busy0 - ownMs - (self.user + self.system) / 1000
      return Math.max(0, other / (performance.now() - t0))
    }
  }
}

export function machine() {
  const model = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown'
  const nofile = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
  return {
    cpus: os.availableParallelism(),
    model: model.trim(),
    memGiB: Number((os.totalmem() / 2 ** 30).toFixed(1)),
    kernel: os.release(),
    node: process.version,
    nofile: nofile ? `${nofile[1]}/${nofile[2]}` : 'unknown',
    somaxconn: Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'))
  }
}

/**
 * Write bench/results/<name>.json and re-render the markdown reports. `result`: { title, command?, notes?,
 * tables: [{ title, head, rows, notes? }], data? }; the command line, duration and commit come from `scenario`.
 */
export async function save(name, result) {
  const dir = path.join(HERE, 'results')
  mkdirSync(dir, { recursive: true })
  const { t0, command, ours } = run
  const top = { name, date: new Date().toISOString(), machine: machine(), title: result.title, command }
  const out = { ...top, tookS: (Date.now() - t0) / 1000, ours: ours.commit, ...result }
  writeFileSync(path.join(dir, `${name}.json`), `${JSON.stringify(out, null, 1)}\n`)
  const { renderAll } = await import('./render.mjs')
  renderAll()
  console.error(`wrote bench/results/${name}.json`)
}

/** The last note of a report: the problems found, or what was checked. */
export const checked = (problems, what) => (problems.length ? `PROBLEMS: ${problems.join('; ')}` : what)

/** `client busy / lag / other CPUs` of a burst, for the tables. */
export const busy = (b) => `${(b.clientBusy * 100).toFixed(0)}% / ${(b.lag * 100).toFixed(0)}% / ${b.other.toFixed(2)}`

/** `k v` pairs of an object, joined. */
export const pairs = (obj, sep = ', ') => Array.from(Object.entries(obj), ([k, v]) => `${k} ${v}`).join(sep)

/** Log with the seconds since start, to stderr. */
function logger(tag) {
  const t0 = Date.now()
  return (...a) => console.error(`[${tag} ${((Date.now() - t0) / 1000).toFixed(0)}s]`, ...a)
}
