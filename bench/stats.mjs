// Statistics and bookkeeping shared by every scenario. Noise is handled one
// way only: each timed measurement of a kind is paired with the same
// measurement of its reference (raw node:http, or the memory broker) right
// before or after it, in alternating order, over several rounds; a result is
// the median of the values and a ratio is the median of the per-pair ratios.
// The CPU other processes used during a measurement is recorded, not corrected.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { HERE } from './harness.mjs'

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return null
  const m = v.length >> 1
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}

/** q-quantile of a sorted array. */
export function quantile(sorted, q) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}

/** Run `a` then `b` (or `b` then `a` on odd rounds), so that drift hits both sides of a pair. */
export async function paired(round, a, b) {
  if (round % 2 === 0) {
    const x = await a()
    return [x, await b()]
  }
  const y = await b()
  return [await a(), y]
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
 * Write bench/results/<name>.json and re-render the markdown reports.
 * `result`: { title, command, tables: [{ title, head, rows, notes? }], notes?, data? }.
 */
export async function save(name, result) {
  const dir = path.join(HERE, 'results')
  mkdirSync(dir, { recursive: true })
  const out = { name, date: new Date().toISOString(), machine: machine(), ...result }
  writeFileSync(path.join(dir, `${name}.json`), `${JSON.stringify(out, null, 1)}\n`)
  const { renderAll } = await import('./render.mjs')
  renderAll()
  console.error(`wrote bench/results/${name}.json`)
}

/** `client busy / lag / other CPUs` of a burst, for the tables. */
export const busy = (b) => `${(b.clientBusy * 100).toFixed(0)}% / ${(b.lag * 100).toFixed(0)}% / ${b.other.toFixed(2)}`

/** Log with the seconds since start, to stderr. */
export function logger(tag) {
  const t0 = Date.now()
  return (...a) => console.error(`[${tag} ${((Date.now() - t0) / 1000).toFixed(0)}s]`, ...a)
}
