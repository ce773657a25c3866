#!/usr/bin/env node
// The Redis broker, on a private redis-server started here on a free port:
//   compare  2 instances × 1,000 streams through Redis (publishes on A) against
//            1 instance × 2,000 streams on the memory broker: events/s, CPU, latency
//   stall    instance A's event loop blocked while B publishes for 4 s, with the
//            default retention and with 1/5 of the stall: events lost (0 unless a reset was sent)
//   burst    3,000 × 2 KB events published on B to clients on A, against the same
//            clients on one memory-broker instance: events/s, clients dropped
// Every server instance runs on CPU 0, the load clients on CPU 1.
//
//   node bench/redis.mjs [--only compare,stall,burst] [--rounds 3]

import { rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { buildOurs, lock, startRedis } from './harness.mjs'
import { burst, latency, nextSeq, Side } from './side.mjs'
import { logger, median, paired, save } from './stats.mjs'

const { values: o } = parseArgs({
  options: { only: { type: 'string', default: 'compare,stall,burst' }, rounds: { type: 'string', default: '3' } }
})
const rounds = Number(o.rounds)
const log = logger('redis')
const command = `node bench/redis.mjs ${process.argv.slice(2).join(' ')}`.trim()

await lock()
const ours = buildOurs()
const redis = await startRedis()
let prefixes = 0
const oursOpts = (broker, extra = {}) => ({
  kind: 'ours',
  ours: ours.dir,
  broker,
  url: redis.url,
  prefix: `bench-${process.pid}-${prefixes++}`,
  plugin: { replay: 1000 },
  ...extra
})
/** A memory instance, or two Redis instances sharing one prefix; `clients` split over those with clients. */
async function instances(broker, clients, extra) {
  if (broker === 'memory') return [await Side.start('memory', oursOpts('memory', extra))]
  const opts = oursOpts('redis', extra)
  return [
    await Side.start('redis A', opts, { client: clients[0] > 0 }),
    await Side.start('redis B', opts, { client: clients[1] > 0 })
  ]
}
const stopAll = (sides) => Promise.all(sides.map((s) => s.stop()))
const problems = (sides) => sides.flatMap((s) => s.problems.map((p) => `${s.name}: ${p}`))
const dropped = async (sides) =>
  (await Promise.all(sides.map((s) => s.server.rpc('stats')))).reduce((a, s) => a + s.dropped, 0)
const t0 = Date.now()

if (o.only.includes('compare')) {
  const res = { memory: { eps: [], cpu: [], p99: [] }, redis: { eps: [], cpu: [], p99: [] } }
  const bad = []
  for (let r = 0; r < rounds; r++) {
    log(`compare, round ${r + 1}/${rounds}`)
    const run = async (broker) => {
      const sides = await instances(broker, [1000, 1000])
      if (broker === 'memory') await sides[0].connect(2000)
      else for (const s of sides) await s.connect(1000)
      await burst(sides, 20)
      const b = await burst(sides, 100)
      const l = await latency(sides, 20, 5)
      bad.push(...problems(sides))
      await stopAll(sides)
      return { ...b, p99: l.p99 }
    }
    const [m, x] = await paired(
      r,
      () => run('memory'),
      () => run('redis')
    )
    for (const [k, v] of [
      ['memory', m],
      ['redis', x]
    ])
      for (const key of ['eps', 'cpu', 'p99']) res[k][key].push(v[key])
  }
  const ratio = (key) => median(res.redis[key].map((v, i) => v / res.memory[key][i]))
  await save('redis', {
    title: 'Redis broker against the memory broker: 2 instances × 1,000 streams vs 1 × 2,000',
    command: `${command} (compare)`,
    tookS: (Date.now() - t0) / 1000,
    ours: ours.commit,
    notes: [
      `${rounds} rounds, memory and redis alternating, fresh processes each; bursts of 100 awaited publishes on A (Redis: an XADD each, delivered by the XREAD loops of A and B); latency: 20 publishes/s for 5 s, the worse instance's p99; (×) the median of the per-round ratios`,
      `redis-server ${redis.version}, private, on a free port; both instances on CPU 0, so the server side has one core either way; CPU is all instances together, Redis excluded`,
      bad.length
        ? `PROBLEMS: ${bad.join('; ')}`
        : 'socket 0 of every instance checked event by event in every burst; every socket got every event'
    ],
    tables: [
      {
        title: 'Result',
        head: ['broker', 'events/s', 'server CPU ms / 1,000 events', 'p99 latency ms'],
        rows: ['memory', 'redis'].map((k) => [
          k,
          ...['eps', 'cpu', 'p99'].map((key) => ({ v: median(res[k][key]), x: k === 'redis' ? ratio(key) : null }))
        ])
      }
    ],
    data: res
  })
}

if (o.only.includes('stall')) {
  const rows = []
  const bad = []
  const variants = { 'default (60 s)': {}, '800 ms': { retentionMs: 800 } }
  for (let r = 0; r < rounds; r++) {
    for (const [label, redisOpts] of Object.entries(variants)) {
      log(`stall, retention ${label}, round ${r + 1}/${rounds}`)
      const [a, b] = await instances('redis', [3, 0], { redis: redisOpts })
      await a.connect(3)
      const first = nextSeq(10)
      await a.load.rpc('arm', { untilSeq: first + 9, verify: 3, seq0: first })
      await b.server.rpc('burst', { k: 10, seq0: first })
      await a.load.next('done')
      const [seq0, marker] = [nextSeq(5000), nextSeq(50)]
      await a.load.rpc('arm', { untilSeq: marker, verify: 3, seq0 })
      const file = path.join(os.tmpdir(), `bench-unblock-${process.pid}-${r}`)
      const blocked = a.server.rpc('block', { ms: 4000, file })
      await a.server.next('blocking')
      const t = Date.now()
      await b.server.rpc('paced', { rate: 1250, count: 5000, seq0 }) // 4 s of publishing, all while A is blocked
      const publishMs = Date.now() - t
      writeFileSync(file, '')
      await blocked
      rmSync(file)
      // Markers until every client has one: an event published while A handles the gap may be covered by its reset.
      let [markers, done] = [0, null]
      while (!done && markers < 50) {
        await b.server.rpc('burst', { k: 1, seq0: marker + markers++ })
        done = await a.load.next('done', 1000).catch(() => null)
      }
      const st = await a.load.rpc('status', {})
      const v = done?.verify ?? st.verify
      if (!done) bad.push(`${label} round ${r + 1}: no marker reached every client; they saw ${JSON.stringify(v)}`)
      rows.push([
        label,
        r + 1,
        5000 + markers,
        v.events / 3,
        v.resets / 3,
        v.lost,
        v.dups,
        v.bad,
        st.closed,
        await dropped([a, b]),
        publishMs
      ])
      if ((v.lost && !v.resets) || v.dups || v.bad) bad.push(`${label} round ${r + 1}: ${JSON.stringify(v)}`)
      await stopAll([a, b])
    }
  }
  await save('redis-stall', {
    title: 'Stalled reader: instance A blocked while B publishes for 4 s',
    command: `${command} (stall)`,
    tookS: (Date.now() - t0) / 1000,
    ours: ours.commit,
    notes: [
      'A and B share a private redis-server; 3 clients on A read every event through eventsource-parser; after 10 warm-up events A runs a busy loop while B publishes 5,000 events at 1,250/s (4 s); A resumes once B is done; then B publishes a marker event every second until every client has one (an event published while A handles the gap may be covered by the reset)',
      "retention: the broker's `retentionMs` (the stream is trimmed by time, `XADD … MINID ~`): the default 60 s covers the stall; 800 ms makes the stall five times the retention",
      "*lost*: events missing from a client's sequence without a `reset` before the jump (must be 0); after a reset a page refetches its state",
      bad.length ? `PROBLEMS: ${bad.join('; ')}` : 'no event lost without a reset, no duplicate, every event byte-exact'
    ],
    tables: [
      {
        title: 'Per round (3 clients on A)',
        head: (
          'retentionMs|round|published|events per client|resets per client|' +
          'lost|duplicates|altered|clients dropped|stats().dropped|B publishing ms'
        ).split('|'),
        rows
      }
    ]
  })
}

if (o.only.includes('burst')) {
  const res = { memory: [], redis: [] }
  const rows = []
  for (let r = 0; r < rounds; r++) {
    log(`burst, round ${r + 1}/${rounds}`)
    const run = async (broker) => {
      const sides = await instances(broker, [100, 0], { size: 2048 })
      await sides[0].connect(100)
      const b = await burst(sides, 3000, sides.at(-1))
      const st = await sides[0].load.rpc('status', {})
      rows.push([r + 1, broker, b.eps, b.cpu, st.closed, await dropped(sides), problems(sides).join('; ') || 'ok'])
      await stopAll(sides)
      return b.eps
    }
    const [m, x] = await paired(
      r,
      () => run('memory'),
      () => run('redis')
    )
    res.memory.push(m)
    res.redis.push(x)
  }
  const ratio = median(res.redis.map((v, i) => v / res.memory[i]))
  await save('redis-burst', {
    title: 'Burst through Redis: 3,000 × 2 KB events to 100 clients on another instance',
    command: `${command} (burst)`,
    tookS: (Date.now() - t0) / 1000,
    ours: ours.commit,
    notes: [
      'redis: 3,000 awaited publishes of a 2,048-byte fragment on B, 100 clients on A (default maxBufferedBytes, 1 MiB); memory: the same clients and publishes on one instance; socket 0 checked event by event',
      `redis / memory events/s: **${ratio.toFixed(2)}×** (median of the per-round ratios ${res.redis.map((v, i) => (v / res.memory[i]).toFixed(2)).join(', ')})`
    ],
    tables: [
      {
        title: 'Per round',
        head: 'round|broker|events/s|server CPU ms / 1,000 events|clients dropped|stats().dropped|check'.split('|'),
        rows
      }
    ],
    data: res
  })
}
await redis.stop()
process.exit(0)
