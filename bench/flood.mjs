#!/usr/bin/env node
// Connection flood: many attempts at once against `maxConnections`, then bursts to the admitted streams with and
// without refused clients knocking. See bench/README.md.
//
//   node bench/flood.mjs [--rounds 3] [--attempts 15000] [--max 5000]

import { readFileSync } from 'node:fs'
import { Child } from './harness.mjs'
import { Side, until } from './side.mjs'
import { checked, median, paired, save, scenario } from './stats.mjs'

const { o, ours, log } = await scenario('flood', { rounds: 3, attempts: 15000, max: 5000 })
const { attempts, max } = o
const k = Math.round(200_000 / max)
const peakRss = (pid) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024

const rows = []
const ratios = []
const problems = []
for (let r = 0; r < o.rounds; r++) {
  log(`round ${r + 1}/${o.rounds}`)
  const side = await Side.start('ours', { kind: 'ours', ours: ours.dir, plugin: { maxConnections: max } })
  const mem0 = await side.mem()
  const c = await side.load.rpc('connect', { port: side.port, n: attempts, pace: false, retries: 30 }, 600_000)
  const status = () => side.load.rpc('status', {})
  await until(async () => (await status()).refusedOpen === 0, 'every refused connection to be closed', 60_000)
  const st = await status()
  const stats = await side.server.rpc('stats')
  side.n = stats.connections
  const mem1 = await side.mem()
  const [ok, refused] = [st.statuses[200] ?? 0, st.statuses[503] ?? 0]
  const heap = (mem1.heapUsed - mem0.heapUsed) / side.n
  const mib = [mem1.rss / 2 ** 20, peakRss(side.server.pid) / 2 ** 20]
  rows.push([r + 1, ok, refused, st.closeHeader, st.closed, stats.refused, c.ms, heap, ...mib])
  const others = attempts - max
  if (ok !== max || refused !== others || st.closed !== others || st.closeHeader !== others)
    problems.push(
      `round ${r + 1}: statuses ${JSON.stringify(st.statuses)}, ${st.closeHeader} connection: close, ${st.closed} closed, errors ${JSON.stringify(st.errors)}`
    )

  // The admitted streams, with and without refused clients knocking meanwhile (a second, unpinned client).
  const flooder = new Child('flooder', 'load.mjs')
  await flooder.next('ready')
  await side.burst(Math.ceil(k / 4))
  let knocks = 0
  const withFlood = async () => {
    let stop = false
    const knocking = (async () => {
      for (; !stop; knocks += 1000) {
        await flooder.rpc('connect', { name: 'f', port: side.port, n: 1000, pace: false })
        await flooder.rpc('close', { name: 'f' })
      }
    })()
    const b = await side.burst(k)
    stop = true
    await knocking
    return b
  }
  const [quiet, flooded] = await paired(r, (i) => (i ? withFlood() : side.burst(k)))
  ratios.push(flooded.eps / quiet.eps)
  rows.at(-1).push(quiet.eps, flooded.eps, knocks)
  problems.push(...side.problems)
  await flooder.stop()
  await side.stop()
}

await save('flood', {
  title: `Connection flood: ${attempts.toLocaleString('en-US')} attempts against maxConnections: ${max.toLocaleString('en-US')}`,
  notes: [
    `a fresh server per round (\`register(htmlSse, { maxConnections: ${max} })\`, default listen backlog); the load client opens all attempts without waiting for answers`,
    `then bursts of ${k} events to the admitted streams, alone and while a second client opens 1,000 more connections at a time (each refused) until the burst ends; alternating order`,
    `admitted streams' events/s with refused clients knocking / without: **${median(ratios).toFixed(2)}×** (median of ${ratios.map((x) => x.toFixed(2)).join(', ')})`,
    checked(
      problems,
      `every round: exactly ${max} admitted, every other attempt answered 503 with connection: close and closed by the server`
    )
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
