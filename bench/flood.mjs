#!/usr/bin/env node
// Connection flood: 15,000 connection attempts, as fast as the client can
// open them, against `maxConnections: 5000`. How many were admitted, how many
// refused with 503 and closed (`connection: close`), the server's memory, and
// whether the admitted streams keep receiving at full speed while refused
// clients keep knocking (bursts with and without a flood, alternating).
//
//   node bench/flood.mjs [--rounds 3] [--attempts 15000] [--max 5000]

import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { buildOurs, Child, lock } from './harness.mjs'
import { Side, until } from './side.mjs'
import { logger, median, paired, save } from './stats.mjs'

const { values: o } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    attempts: { type: 'string', default: '15000' },
    max: { type: 'string', default: '5000' }
  }
})
const [rounds, attempts, max] = [Number(o.rounds), Number(o.attempts), Number(o.max)]
const k = Math.round(200_000 / max)
const log = logger('flood')
const t0 = Date.now()
const peakRss = (pid) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024

await lock()
const ours = buildOurs()
const rows = []
const ratios = []
const problems = []
for (let r = 0; r < rounds; r++) {
  log(`round ${r + 1}/${rounds}`)
  const side = await Side.start('ours', { kind: 'ours', ours: ours.dir, plugin: { maxConnections: max } })
  const mem0 = await side.mem()
  const c = await side.load.rpc('connect', { port: side.port, n: attempts, pace: false, retries: 30 }, 600_000)
  await until(
    async () => (await side.load.rpc('status', {})).refusedOpen === 0,
    'every refused connection to be closed',
    60_000
  )
  const st = await side.load.rpc('status', {})
  const stats = await side.server.rpc('stats')
  side.n = stats.connections
  const mem1 = await side.mem()
  rows.push([
    r + 1,
    st.statuses[200] ?? 0,
    st.statuses[503] ?? 0,
    st.closeHeader,
    st.closed,
    stats.refused,
    c.ms,
    (mem1.heapUsed - mem0.heapUsed) / side.n,
    mem1.rss / 2 ** 20,
    peakRss(side.server.pid) / 2 ** 20
  ])
  if (
    st.statuses[200] !== max ||
    st.statuses[503] !== attempts - max ||
    st.closed !== attempts - max ||
    st.closeHeader !== attempts - max
  )
    problems.push(
      `round ${r + 1}: statuses ${JSON.stringify(st.statuses)}, ${st.closeHeader} connection: close, ${st.closed} closed, errors ${JSON.stringify(st.errors)}`
    )

  // The admitted streams, with and without refused clients knocking meanwhile (a second, unpinned client).
  const flooder = new Child('flooder', 'load.mjs')
  await flooder.next('ready')
  await side.burst(Math.ceil(k / 4))
  let knocks = 0
  const knocking = async (stop) => {
    while (!stop.done) {
      await flooder.rpc('connect', { name: 'f', port: side.port, n: 1000, pace: false })
      await flooder.rpc('close', { name: 'f' })
      knocks += 1000
    }
  }
  const withFlood = async () => {
    const stop = {}
    const loop = knocking(stop)
    const b = await side.burst(k)
    stop.done = true
    await loop
    return b
  }
  const [quiet, flooded] = await paired(r, () => side.burst(k), withFlood)
  ratios.push(flooded.eps / quiet.eps)
  rows.at(-1).push(quiet.eps, flooded.eps, knocks)
  problems.push(...side.problems)
  await flooder.stop()
  await side.stop()
}

await save('flood', {
  title: `Connection flood: ${attempts.toLocaleString('en-US')} attempts against maxConnections: ${max.toLocaleString('en-US')}`,
  command: `node bench/flood.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  tookS: (Date.now() - t0) / 1000,
  ours: ours.commit,
  notes: [
    `a fresh server per round (\`register(htmlSse, { maxConnections: ${max} })\`, default listen backlog); the load client opens all attempts without waiting for answers`,
    `then bursts of ${k} events to the admitted streams, alone and while a second client opens 1,000 more connections at a time (each refused) until the burst ends; alternating order`,
    `admitted streams' events/s with refused clients knocking / without: **${median(ratios).toFixed(2)}×** (median of ${ratios.map((x) => x.toFixed(2)).join(', ')})`,
    problems.length
      ? `PROBLEMS: ${problems.join('; ')}`
      : `every round: exactly ${max} admitted, every other attempt answered 503 with connection: close and closed by the server`
  ],
  tables: [
    {
      title: 'Per round',
      head: (
        'round|admitted (200)|refused (503)|connection: close|closed by server|stats().refused|' +
        'flood ms|heap B per admitted stream|RSS after, MiB|peak RSS, MiB|events/s alone|events/s during knocks|knocks'
      ).split('|'),
      rows
    }
  ]
})
process.exit(problems.length ? 1 : 0)
