#!/usr/bin/env node
// The Redis broker on a private redis-server: `compare` (2 instances through Redis against 1 on the memory broker),
// `stall` (instance A blocked while B publishes for 4 s), `burst` (3,000 × 2 KB published on B to clients on A).
// See bench/README.md.
//
//   node bench/redis.mjs [--only compare,stall,burst] [--rounds 3]

import { rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { startRedis } from './harness.mjs'
import { burst, latency, nextSeq, Side } from './side.mjs'
import { checked, median, paired, ratio, save, scenario } from './stats.mjs'

const { o, ours, log, command } = await scenario('redis', { only: 'compare,stall,burst', rounds: 3 })
const redis = await startRedis()
const BROKERS = ['memory', 'redis']
let prefixes = 0
/** A memory instance with n streams, or Redis instances A with n streams and B with none (`split`: n/2 each). */
async function instances(broker, n, extra = {}, split = false) {
  const prefix = `bench-${process.pid}-${prefixes++}`
  const opts = { kind: 'ours', ours: ours.dir, broker, url: redis.url, prefix, plugin: { replay: 1000 }, ...extra }
  if (broker === 'memory') {
    const side = await Side.start('memory', opts)
    await side.connect(n)
    return [side]
  }
  const sides = [await Side.start('redis A', opts), await Side.start('redis B', opts, { client: split })]
  await sides[0].connect(split ? n / 2 : n)
  if (split) await sides[1].connect(n / 2)
  return sides
}
const stopAll = (sides) => Promise.all(sides.map((s) => s.stop()))
const problems = (sides) => sides.flatMap((s) => s.problems.map((p) => `${s.name}: ${p}`))
const dropped = async (sides) =>
  (await Promise.all(sides.map((s) => s.server.rpc('stats')))).reduce((a, s) => a + s.dropped, 0)

if (o.only.includes('compare')) {
  const res = { memory: { eps: [], cpu: [], p99: [] }, redis: { eps: [], cpu: [], p99: [] } }
  const bad = []
  const run = async (broker) => {
    const sides = await instances(broker, 2000, {}, true)
    await burst(sides, 20)
    const b = await burst(sides, 100)
    const l = await latency(sides, 20, 5)
    bad.push(...problems(sides))
    await stopAll(sides)
    return { ...b, p99: l.p99 }
  }
  for (let r = 0; r < o.rounds; r++) {
    log(`compare, round ${r + 1}/${o.rounds}`)
    const both = await paired(r, (i) => run(BROKERS[i]))
    for (const i of [0, 1]) for (const key of ['eps', 'cpu', 'p99']) res[BROKERS[i]][key].push(both[i][key])
  }
  await save('redis', {
    title: 'Redis broker against the memory broker: 2 instances × 1,000 streams vs 1 × 2,000',
    command: `${command} (compare)`,
    notes: [
      `${o.rounds} rounds, memory and redis alternating, fresh processes each; bursts of 100 awaited publishes on A (Redis: an XADD each, delivered by the XREAD loops of A and B); latency: 20 publishes/s for 5 s, the worse instance's p99; (×) the median of the per-round ratios`,
      `redis-server ${redis.version}, private, on a free port; both instances on CPU 0, so the server side has one core either way; CPU is all instances together, Redis excluded`,
      checked(bad, 'socket 0 of every instance checked event by event in every burst; every socket got every event')
    ],
    tables: [
      {
        title: 'Result',
        head: ['broker', 'events/s', 'server CPU ms / 1,000 events', 'p99 latency ms'],
        rows: BROKERS.map((k) => [
          k,
          ...['eps', 'cpu', 'p99'].map((key) => ({
            v: median(res[k][key]),
            x: k === 'redis' ? ratio(res.redis[key], res.memory[key]) : null
          }))
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
  for (let r = 0; r < o.rounds; r++) {
    for (const [label, redisOpts] of Object.entries(variants)) {
      log(`stall, retention ${label}, round ${r + 1}/${o.rounds}`)
      const [a, b] = await instances('redis', 3, { redis: redisOpts })
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
      const row = [label, r + 1, 5000 + markers, v.events / 3, v.resets / 3, v.lost, v.dups, v.bad, st.closed]
      rows.push([...row, await dropped([a, b]), publishMs])
      if ((v.lost && !v.resets) || v.dups || v.bad) bad.push(`${label} round ${r + 1}: ${JSON.stringify(v)}`)
      await stopAll([a, b])
    }
  }
  await save('redis-stall', {
    title: 'Stalled reader: instance A blocked while B publishes for 4 s',
    command: `${command} (stall)`,
    notes: [
      'A and B share a private redis-server; 3 clients on A read every event through eventsource-parser; after 10 warm-up events A runs a busy loop while B publishes 5,000 events at 1,250/s (4 s); A resumes once B is done; then B publishes a marker event every second until every client has one (an event published while A handles the gap may be covered by the reset)',
      "retention: the broker's `retentionMs` (the stream is trimmed by time, `XADD … MINID ~`): the default 60 s covers the stall; 800 ms makes the stall five times the retention",
      "*lost*: events missing from a client's sequence without a `reset` before the jump (must be 0); after a reset a page refetches its state",
      checked(bad, 'no event lost without a reset, no duplicate, every event byte-exact')
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
  for (let r = 0; r < o.rounds; r++) {
    log(`burst, round ${r + 1}/${o.rounds}`)
    const run = async (broker) => {
      const sides = await instances(broker, 100, { size: 2048 })
      const b = await burst(sides, 3000, sides.at(-1))
      const st = await sides[0].load.rpc('status', {})
      rows.push([r + 1, broker, b.eps, b.cpu, st.closed, await dropped(sides), problems(sides).join('; ') || 'ok'])
      await stopAll(sides)
      return b.eps
    }
    const both = await paired(r, (i) => run(BROKERS[i]))
    for (const i of [0, 1]) res[BROKERS[i]].push(both[i])
  }
  await save('redis-burst', {
    title: 'Burst through Redis: 3,000 × 2 KB events to 100 clients on another instance',
    command: `${command} (burst)`,
    notes: [
      'redis: 3,000 awaited publishes of a 2,048-byte fragment on B, 100 clients on A (default maxBufferedBytes, 1 MiB); memory: the same clients and publishes on one instance; socket 0 checked event by event',
      `redis / memory events/s: **${ratio(res.redis, res.memory).toFixed(2)}×** (median of the per-round ratios ${res.redis.map((v, i) => (v / res.memory[i]).toFixed(2)).join(', ')})`
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
