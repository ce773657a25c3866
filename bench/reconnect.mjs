#!/usr/bin/env node
// Reconnect storm: N clients resume `behind` events behind at once, this plugin (memory and Redis broker) against
// raw node:http, in batches and all at once. See bench/README.md.
//
//   node bench/reconnect.mjs [--rounds 3] [--clients 10000] [--behind 100]

import { readFileSync } from 'node:fs'
import { startRedis } from './harness.mjs'
import { nextSeq, Side } from './side.mjs'
import { checked, cpuAccount, median, pairs, ratio, save, scenario } from './stats.mjs'

const { o, ours, log } = await scenario('reconnect', { rounds: 3, clients: 10000, behind: 100 })
const { clients: n, behind } = o
const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'))
const redis = await startRedis()
const MODES = {
  batches: { pace: true },
  'at-once, backlog 511': { pace: false },
  [`at-once, backlog ${somaxconn}`]: { pace: false, backlog: somaxconn }
}
const CASES = [
  ...Object.keys(MODES).flatMap((mode) => [`raw|${mode}`, `memory|${mode}`]),
  'raw-joined|batches',
  'redis|batches'
]
const res = Object.fromEntries(
  CASES.map((c) => [c, { ms: [], cpu: [], redisCpu: [], commands: [], connectErrors: [] }])
)
const problems = []

async function storm(kind, mode, r) {
  const { pace, backlog } = MODES[mode]
  const opts = { kind: kind.startsWith('raw') ? 'raw' : 'ours', joined: kind === 'raw-joined', ours: ours.dir, backlog }
  opts.plugin = { replay: 1000 }
  if (kind === 'redis') Object.assign(opts, { broker: 'redis', url: redis.url, prefix: `storm-${r}-${Date.now()}` })
  const seq0 = nextSeq(2 * behind + 1)
  let ids
  if (kind === 'redis') {
    // published by another instance, so this one starts with an empty window (a restart)
    const other = await Side.start('publisher', opts, { client: false })
    ids = await other.server.rpc('prefill', { n: 2 * behind, seq0 })
    await other.stop()
  }
  const side = await Side.start(`${kind} ${mode}`, opts)
  ids ??= await side.server.rpc('prefill', { n: 2 * behind, seq0 })
  const sample = async () => [await redis.commands(), redis.cpuMs(), await side.server.rpc('cpu')]
  const [cmd0, rcpu0, scpu0] = await sample()
  const acct = cpuAccount()
  const { t0: start } = await side.load.rpc('arm', { k: behind, expect: n })
  const headers = { 'Last-Event-ID': ids[behind - 1] }
  const connect = { port: side.port, n, headers, pace, verify: 10, seq0: seq0 + behind, retries: 30 }
  const connected = await side.load.rpc('connect', connect, 600_000)
  await side.load.next('done', 600_000)
  await side.load.rpc('arm', { k: 1 })
  await side.server.rpc('burst', { k: 1, seq0: seq0 + 2 * behind })
  const live = await side.load.next('done', 120_000)
  const [cmd1, rcpu1, scpu1] = await sample()
  const st = await side.load.rpc('status', {})
  const v = st.verify
  if (st.statuses[200] !== n || v.events !== 10 * (behind + 1) || v.lost || v.dups || v.bad)
    problems.push(`${kind} ${mode}: statuses ${JSON.stringify(st.statuses)}, checked sockets ${JSON.stringify(v)}`)
  const out = res[`${kind}|${mode}`]
  out.ms.push((live.t - start) / 1e6)
  out.cpu.push(scpu1 - scpu0)
  out.redisCpu.push(rcpu1 - rcpu0)
  const calls = Object.entries(cmd1)
    .map(([c, v]) => [c, v - (cmd0[c] ?? 0) - (c === 'info' ? 1 : 0)])
    .filter(([, v]) => v > 0)
  out.commands.push(Object.fromEntries(calls))
  out.connectErrors.push({ retries: connected.retries, ...connected.errors })
  out.other = Math.max(out.other ?? 0, acct.end(scpu1 - scpu0))
  await side.stop()
}

for (let r = 0; r < o.rounds; r++) {
  for (const c of r % 2 ? [...CASES].reverse() : CASES) {
    log(`round ${r + 1}/${o.rounds}: ${c}`)
    const [kind, mode] = c.split('|')
    await storm(kind, mode, r)
  }
}
await redis.stop()

/** Case a against case b (the raw case in the same mode by default), for `key`. */
const vs = (a, key, b = `raw|${a.split('|')[1]}`) => ratio(res[a][key], res[b][key])
const joined = (a, key) => vs(a, key, 'raw-joined|batches').toFixed(2)
const total = (cmds) => Object.values(cmds).reduce((a, b) => a + b, 0)
await save('reconnect', {
  title: `Reconnect storm: ${n.toLocaleString('en-US')} clients resume ${behind} events behind, against raw node:http`,
  notes: [
    `${o.rounds} rounds, cases in alternating order, a fresh server per measurement; time = from the first connect until every client has its ${behind} replayed events and then one live event; CPU = the server process's; (×) the median of the per-round ratios to raw in the same mode`,
    `raw: node:http writes the ${behind} frames after the Last-Event-ID from an array, one res.write each (raw-joined: all of them in one res.write); ours: replay 1000, the stream of the route \`reply.sse({ topics })\`; redis: redisBroker on a private redis-server ${redis.version}, the events published by another instance before this one started`,
    `memory broker against raw-joined (batches): time ${joined('memory|batches', 'ms')}×, server CPU ${joined('memory|batches', 'cpu')}×; redis against raw-joined: time ${joined('redis|batches', 'ms')}×, CPU ${joined('redis|batches', 'cpu')}×`,
    `the kernel caps a listen backlog at net.core.somaxconn = ${somaxconn}; Node's default backlog is 511`,
    checked(
      problems,
      `every client got status 200; 10 sockets per storm checked event by event (${behind} replayed + 1 live, in order, once)`
    )
  ],
  tables: [
    {
      title: 'Time and server CPU',
      head: 'broker|connects|time ms|server CPU ms|Redis CPU ms|Redis commands|connect retries (last error)'.split('|'),
      rows: CASES.map((c) => {
        const [kind, mode] = c.split('|')
        const [x, isRaw, isRedis] = [res[c], kind === 'raw', kind === 'redis']
        return [
          kind,
          mode,
          { v: median(x.ms), x: isRaw ? null : vs(c, 'ms') },
          { v: median(x.cpu), x: isRaw ? null : vs(c, 'cpu') },
          isRedis ? median(x.redisCpu) : null,
          isRedis ? `${median(x.commands.map(total))} (${pairs(x.commands.at(-1))})` : null,
          x.connectErrors.map((e) => pairs(e, ' ') || '0').join(', ')
        ]
      })
    }
  ],
  data: res
})
process.exit(problems.length ? 1 : 0)
