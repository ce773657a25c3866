#!/usr/bin/env node
// The one renderer: bench/results/*.json -> bench/RESULTS.md, bench/REDIS.md,
// bench/POSTGRES.md, bench/FRAMING.md. Every scenario calls it after writing its
// JSON; run it by hand with `node bench/render.mjs`. A report: its title, an
// intro (a line, or `introFile`: hand-written text above the measured sections),
// the JSON names of its sections, `notes` (a hand-written file after them).

import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { HERE } from './harness.mjs'

const REPORTS = {
  'RESULTS.md': {
    title: 'Benchmark results',
    intro:
      'Rendered by `node bench/render.mjs` from `bench/results/*.json`; how each scenario measures is in bench/README.md. ' +
      'The machine is a noisy 2-core VM shared with other work: read the ratios to the reference measured in the same run, not the absolute numbers.',
    names: ['fanout', 'scale', 'burst', 'reconnect', 'flood', 'metrics']
  },
  'REDIS.md': {
    title: 'Redis broker',
    intro:
      'Rendered by `node bench/render.mjs` from `bench/results/redis*.json`; each run starts its own redis-server on a free port.',
    names: ['redis', 'redis-stall', 'redis-burst']
  },
  'POSTGRES.md': {
    title: 'Postgres broker',
    introFile: 'postgres-notes.md',
    names: ['postgres', 'postgres-latency', 'postgres-order', 'postgres-storm']
  },
  'FRAMING.md': { title: 'SSE framing of HTML: ours vs other libraries', names: ['framing'], notes: 'framing-notes.md' }
}

/** 1,234 for large numbers, 12.3 / 1.23 for small ones. */
function fmt(n) {
  if (typeof n !== 'number') return n == null ? '–' : String(n)
  if (!Number.isFinite(n)) return '–'
  const digits = Math.abs(n) >= 100 || Number.isInteger(n) ? 0 : Math.abs(n) >= 10 ? 1 : 2
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** A cell: a number, a string, or { v, x } (a value and its ratio to the reference). */
function cell(c) {
  if (c !== null && typeof c === 'object') return c.x == null ? fmt(c.v) : `${fmt(c.v)} (${c.x.toFixed(2)}×)`
  return fmt(c)
}

function section(r) {
  const m = r.machine
  const L = [`## ${r.title}`, '']
  L.push(`- command: \`${r.command}\`${r.tookS ? ` (took ${fmt(r.tookS / 60)} min)` : ''}`)
  L.push(`- date: ${r.date}; ours: ${r.ours ?? '–'}`)
  L.push(
    `- machine: ${m.cpus} CPUs (${m.model}), ${m.memGiB} GiB, Linux ${m.kernel}, Node ${m.node}, open files ${m.nofile}, somaxconn ${m.somaxconn}`
  )
  for (const note of r.notes ?? []) L.push(`- ${note}`)
  for (const t of r.tables) {
    const num = (c) => typeof c === 'number' || (c !== null && typeof c === 'object')
    const align = t.head.map((_, i) => (i > 0 && t.rows.some((row) => num(row[i])) ? '---:' : '---'))
    L.push('', `### ${t.title}`, '', `| ${t.head.join(' | ')} |`, `|${align.join('|')}|`)
    for (const row of t.rows) L.push(`| ${row.map(cell).join(' | ')} |`)
    if (t.notes?.length) L.push('', ...t.notes.map((n) => `- ${n}`))
  }
  return L.join('\n')
}

export function renderAll() {
  const dir = path.join(HERE, 'results')
  for (const [file, rep] of Object.entries(REPORTS)) {
    const parts = rep.names
      .map((name) => path.join(dir, `${name}.json`))
      .filter((p) => existsSync(p))
      .map((p) => section(JSON.parse(readFileSync(p, 'utf8'))))
    if (parts.length === 0) continue
    const notes = rep.notes ? readFileSync(path.join(HERE, rep.notes), 'utf8') : ''
    const text = rep.introFile ? readFileSync(path.join(HERE, rep.introFile), 'utf8').trimEnd() : rep.intro
    const intro = text ? `${text}\n\n` : ''
    writeFileSync(
      path.join(HERE, file),
      `# ${rep.title}\n\n${intro}${parts.join('\n\n')}\n${notes ? `\n${notes}` : ''}`
    )
  }
  return readdirSync(dir)
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) renderAll()
