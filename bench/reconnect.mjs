#!/usr/bin/env node
// Reconnect storm: 10,000 clients, each with a Last-Event-ID 100 events
// behind, reconnect at once. Time until every client has its 100 replayed
// events and then one live event, and the server's CPU, for this plugin with
// the memory broker and with the Redis broker (a fresh instance: its recent
// window is empty, as after a restart) against raw node:http writing the same
// 100 frames to each connection from an array.
//
// Modes: `batches` opens 500 connections, waits for their response heads,
// then the next 500; `at-once` opens them as fast as the client can, with the
// default listen backlog (511) and with `backlog` set to somaxconn.
//
//   node bench/reconnect.mjs [--rounds 3] [--clients 10000] [--behind 100]

import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { buildOurs, lock, startRedis } from './harness.mjs'
import { nextSeq, Side } from './side.mjs'
import { cpuAccount, logger, median, save } from './stats.mjs'

const { values: o } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    clients: { type: 'string', default: '10000' },
    behind: { type: 'string', default: '100' }
  }
})
const [rounds, n, behind] = [Number(o.rounds), Number(o.clients), Number(o.behind)]
const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'))
const log = logger('reconnect')
const t0 = Date.now()

await lock()
const ours = buildOurs()
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
  const raw = kind.startsWith('raw')
  const opts = {
    kind: raw ? 'raw' : 'ours',
    joined: kind === 'raw-joined',
    ours: ours.dir,
    backlog,
    plugin: { replay: 1000 }
  }
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
  const [cmd0, rcpu0, scpu0] = [await redis.commands(), redis.cpuMs(), await side.server.rpc('cpu')]
  const acct = cpuAccount()
  const { t0: start } = await side.load.rpc('arm', { k: behind, expect: n })
  const headers = { 'Last-Event-ID': ids[behind - 1] }
  const connected = await side.load.rpc(
    'connect',
    { port: side.port, n, headers, pace, verify: 10, seq0: seq0 + behind, retries: 30 },
    600_000
  )
  await side.load.next('done', 600_000)
  await side.load.rpc('arm', { k: 1 })
  await side.server.rpc('burst', { k: 1, seq0: seq0 + 2 * behind })
  const live = await side.load.next('done', 120_000)
  const [cmd1, rcpu1, scpu1] = [await redis.commands(), redis.cpuMs(), await side.server.rpc('cpu')]
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

for (let r = 0; r < rounds; r++) {
  for (const c of r % 2 ? [...CASES].reverse() : CASES) {
    log(`round ${r + 1}/${rounds}: ${c}`)
    const [kind, mode] = c.split('|')
    await storm(kind, mode, r)
  }
}
await redis.stop()

const ratio = (c, key) => {
  const ref = res[`raw|${c.split('|')[1]}`][key]
  return c.startsWith('raw|') ? null : median(res[c][key].map((v, i) => v / ref[i]))
}
const vs = (a, b, key) => median(res[a][key].map((v, i) => v / res[b][key][i])).toFixed(2)
const total = (cmds) => Object.values(cmds).reduce((a, b) => a + b, 0)
await save('reconnect', {
  title: `Reconnect storm: ${n.toLocaleString('en-US')} clients resume ${behind} events behind, against raw node:http`,
  command: `node bench/reconnect.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  tookS: (Date.now() - t0) / 1000,
  ours: ours.commit,
  notes: [
    `${rounds} rounds, cases in alternating order, a fresh server per measurement; time = from the first connect until every client has its ${behind} replayed events and then one live event; CPU = the server process's; (×) the median of the per-round ratios to raw in the same mode`,
    `raw: node:http writes the ${behind} frames after the Last-Event-ID from an array, one res.write each (raw-joined: all of them in one res.write); ours: replay 1000, the stream of the route \`reply.sse({ topics })\`; redis: redisBroker on a private redis-server ${redis.version}, the events published by another instance before this one started`,
    `memory broker against raw-joined (batches): time ${vs('memory|batches', 'raw-joined|batches', 'ms')}×, server CPU ${vs('memory|batches', 'raw-joined|batches', 'cpu')}×; redis against raw-joined: time ${vs('redis|batches', 'raw-joined|batches', 'ms')}×, CPU ${vs('redis|batches', 'raw-joined|batches', 'cpu')}×`,
    `the kernel caps a listen backlog at net.core.somaxconn = ${somaxconn}; Node's default backlog is 511`,
    problems.length
      ? `PROBLEMS: ${problems.join('; ')}`
      : `every client got status 200; 10 sockets per storm checked event by event (${behind} replayed + 1 live, in order, once)`
  ],
  tables: [
    {
      title: 'Time and server CPU',
      head: 'broker|connects|time ms|server CPU ms|Redis CPU ms|Redis commands|connect retries (last error)'.split('|'),
      rows: CASES.map((c) => {
        const [kind, mode] = c.split('|')
        const x = res[c]
        const cmds = x.commands.at(-1)
        return [
          kind,
          mode,
          { v: median(x.ms), x: ratio(c, 'ms') },
          { v: median(x.cpu), x: ratio(c, 'cpu') },
          kind === 'redis' ? median(x.redisCpu) : null,
          kind === 'redis'
            ? `${median(x.commands.map(total))} (${Object.entries(cmds)
                .map(([k, v]) => `${k} ${v}`)
                .join(', ')})`
            : null,
          x.connectErrors
            .map(
              (e) =>
                Object.entries(e)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(' ') || '0'
            )
            .join(', ')
        ]
      })
    }
  ],
  data: res
})
process.exit(problems.length ? 1 : 0)
