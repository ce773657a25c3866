#!/usr/bin/env node
// Where a V8 CPU profile (.cpuprofile) spent its time: self time per function and per area (the plugin, Node's
// HTTP / stream / net layers, GC, idle).
//
//   node bench/cpuprofile.mjs <file.cpuprofile> [--top 25]

import { readFileSync } from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

const AREAS = [
  ['(idle)', /^\(idle\)$/],
  ['(garbage collector)', /^\(garbage collector\)$/],
  ['(program)', /^\((program|root)\)$/],
  ['native bindings (writev: the send syscalls)', /^native$/],
  ['the plugin (dist/lib)', /fastify-html-sse-bench[^/]*\/dist\//],
  ['the bench server (bench/)', /\/bench\//],
  ['node:_http_outgoing / _http_server', /node:_http_/],
  ['node:internal/streams', /node:internal\/streams\//],
  ['node:net, stream_base_commons', /node:(net|internal\/stream_base_commons)/],
  ['fastify, other node_modules', /node_modules\//],
  ['node: other', /^node:/]
]

const where = (f) => (f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : '')
const areaOf = (f) => {
  const what = f.url || (f.functionName.startsWith('(') ? f.functionName : 'native')
  return AREAS.find(([, re]) => re.test(what))?.[0] ?? 'other'
}

/** Self time (ms) per function and per area of a profile, largest first: { totalMs, functions, areas }. */
export function summarize(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map()
  const dt = profile.timeDeltas
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]
    self.set(id, (self.get(id) ?? 0) + (dt[i + 1] ?? dt[i] ?? 0))
  }
  const fns = new Map()
  const areas = new Map()
  let total = 0
  for (const [id, us] of self) {
    const f = byId.get(id).callFrame
    const key = `${f.functionName || '(anonymous)'} ${where(f)}`
    fns.set(key, (fns.get(key) ?? 0) + us)
    const a = areaOf(f)
    areas.set(a, (areas.get(a) ?? 0) + us)
    total += us
  }
  const sorted = (m) => [...m].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ name, ms: us / 1000 }))
  return { totalMs: total / 1000, functions: sorted(fns), areas: sorted(areas) }
}

/** Lines of text: the areas, then the `top` functions, each with its share of the busy (non-idle) time. */
export function report(profile, top = 25) {
  const s = summarize(profile)
  const idle = s.areas.find((a) => a.name === '(idle)')?.ms ?? 0
  const busy = s.totalMs - idle
  const line = ({ name, ms }) =>
    `${ms.toFixed(0).padStart(7)} ms ${((ms / busy) * 100).toFixed(1).padStart(5)}%  ${name}`
  return [
    `busy ${busy.toFixed(0)} ms (idle ${idle.toFixed(0)} ms); self time by area:`,
    ...s.areas.filter((a) => a.name !== '(idle)').map(line),
    `top ${top} functions by self time:`,
    ...s.functions
      .filter((f) => !f.name.startsWith('(idle)'))
      .slice(0, top)
      .map(line)
  ]
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values, positionals } = parseArgs({
    options: { top: { type: 'string', default: '25' } },
    allowPositionals: true
  })
  for (const file of positionals) {
    console.log(`== ${file}`)
    console.log(report(JSON.parse(readFileSync(file, 'utf8')), Number(values.top)).join('\n'))
  }
}
