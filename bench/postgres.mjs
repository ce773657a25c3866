#!/usr/bin/env node
// The Postgres broker on a database of its own (DATABASE_URL's server, default postgres://postgres@127.0.0.1:5432/test;
// the database is made and dropped by the run). See bench/POSTGRES.md.
//   fanout   1,000 clients: memory (1 instance) against Redis and Postgres (2 instances × 500, publishes on A)
//   latency  publish inside a transaction: p50/p99 of the publish call and of the whole transaction, against the
//            transaction without a publish and a publish after it (the two-step way)
//   order    the ordering lock with 16 concurrent publishers: transactions/s and p50/p99 against the same INSERT
//            without the lock, with 0 and 2 ms of work between publish and COMMIT; delivery latency with and
//            without a long unrelated transaction open
//   storm    1,000 clients resume 100 behind at once on an instance started after the events: the queries it ran;
//            and 1,000 concurrent replays of 10 distinct ids on a broker that is not listening (no window)
//
//   node bench/postgres.mjs [--only fanout,latency,order,storm] [--rounds 3]

import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'
import { oursEntry, startRedis } from './harness.mjs'
import { renderHtml } from './payload.mjs'
import { burst, latency, nextSeq, Side, until } from './side.mjs'
import { checked, median, paired, quantile, ratio, save, scenario } from './stats.mjs'

const ADMIN_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const dbUrl = (name) => {
  const u = new URL(ADMIN_URL)
  u.pathname = `/${name}`
  return u.toString()
}

/**
 * A pg.Pool whose queries are counted (replays, lastId and publishes go through it; the LISTEN reader does not).
 * Also the pool of a Postgres instance of bench/servers.mjs (`broker: 'postgres'`).
 */
export async function countingPool(connectionString, max = 4) {
  const pg = (await import('pg')).default
  const pool = new pg.Pool({ connectionString, max })
  pool.on('error', () => {})
  const counted = { queries: 0 }
  const connect = pool.connect.bind(pool)
  pool.connect = async () => {
    const client = await connect()
    if (!client.counted) {
      const query = client.query.bind(client)
      client.query = (...args) => {
        counted.queries++
        return query(...args)
      }
      client.counted = true
    }
    return client
  }
  return { pool, counted }
}

async function main() {
  const { o, ours, log, command } = await scenario('postgres', { only: 'fanout,latency,order,storm', rounds: 3 })
  const pg = (await import('pg')).default
  const { default: htmlSse } = await import(pathToFileURL(oursEntry(ours.dir)).href)
  const { postgresBroker } = await import(pathToFileURL(oursEntry(ours.dir, './postgres')).href)
  const dbName = `fhs_bench_${process.pid}`
  const admin = new pg.Client({ connectionString: ADMIN_URL })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${dbName}`)
  const url = dbUrl(dbName)
  const version = (await admin.query('SHOW server_version')).rows[0].server_version
  const pool = new pg.Pool({ connectionString: url, max: 20 })
  pool.on('error', () => {})
  await pool.query('CREATE TABLE notes (id bigserial PRIMARY KEY, text text NOT NULL)')
  let tables = 0
  const newTable = () => `bench_${tables++}`
  const q = (sorted, p) => quantile(sorted, p)
  const ms = (v) => (v === null ? null : Number(v.toFixed(2)))

  try {
    if (o.only.includes('fanout')) await fanout()
    if (o.only.includes('latency')) await txLatency()
    if (o.only.includes('order')) await orderCost()
    if (o.only.includes('storm')) await storm()
  } finally {
    await pool.end()
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
    await admin.end()
  }
  process.exit(0)

  /** servers.mjs options of a Postgres instance on `table`: its broker's window is the newest 1,000 events. */
  function pgOpts(table) {
    return { kind: 'ours', ours: ours.dir, broker: 'postgres', url, table, postgres: { replay: 1000 } }
  }

  async function fanout() {
    const redis = await startRedis()
    const KINDS = ['memory', 'redis', 'postgres']
    const res = Object.fromEntries(KINDS.map((k) => [k, { eps: [], cpu: [], p50: [], p99: [] }]))
    const bad = []
    const n = 1000
    const run = async (kind, r) => {
      let sides
      if (kind === 'memory') {
        sides = [await Side.start('memory', { kind: 'ours', ours: ours.dir, plugin: { replay: 1000 } })]
        await sides[0].connect(n)
      } else if (kind === 'redis') {
        const opts = {
          kind: 'ours',
          ours: ours.dir,
          broker: 'redis',
          url: redis.url,
          prefix: `pgb-${r}-${Date.now()}:`
        }
        sides = [await Side.start('redis A', opts), await Side.start('redis B', opts)]
      } else {
        const table = newTable()
        sides = [await Side.start('postgres A', pgOpts(table)), await Side.start('postgres B', pgOpts(table))]
      }
      if (kind !== 'memory') await Promise.all(sides.map((s) => s.connect(n / 2)))
      await burst(sides, 20)
      const b = await burst(sides, 100)
      const l = await latency(sides, 20, 5)
      bad.push(...sides.flatMap((s) => s.problems.map((p) => `${kind} ${s.name}: ${p}`)))
      await Promise.all(sides.map((s) => s.stop()))
      return { ...b, ...l }
    }
    for (let r = 0; r < o.rounds; r++) {
      log(`fanout, round ${r + 1}/${o.rounds}`)
      const all = await paired(r, (i) => run(KINDS[i], r), 3)
      for (const i of [0, 1, 2]) for (const key of ['eps', 'cpu', 'p50', 'p99']) res[KINDS[i]][key].push(all[i][key])
    }
    await redis.stop()
    await save('postgres', {
      title: 'Fan-out to 1,000 clients: memory against Redis and Postgres (2 instances × 500)',
      command: `${command} (fanout)`,
      notes: [
        `${o.rounds} rounds, the three in rotating order, fresh processes each; bursts of 100 awaited publishes on A (Redis: an XADD each, read by the XREAD loops of A and B; Postgres: an INSERT each, read by A's and B's LISTEN connections on NOTIFY); latency: 20 publishes/s for 5 s after one second not counted, the worse instance; (×) the median of the per-round ratios to memory`,
        `PostgreSQL ${version} (the machine's, a database of the run's own), redis-server ${redis.version} (private); every server process on CPU 0; CPU is all instances together, the database excluded`,
        checked(bad, 'socket 0 of every instance checked event by event in every burst; every socket got every event')
      ],
      tables: [
        {
          title: 'Result',
          head: ['broker', 'events/s', 'server CPU ms / 1,000 events', 'p50 latency ms', 'p99 latency ms'],
          rows: KINDS.map((k) => [
            k,
            ...['eps', 'cpu', 'p50', 'p99'].map((key) => ({
              v: median(res[k][key]),
              x: k === 'memory' ? null : ratio(res[k][key], res.memory[key])
            }))
          ])
        }
      ],
      data: res
    })
  }

  /** An app on the Postgres broker in this process (not listening): publish is what it measures. */
  async function localApp(table, options = {}) {
    const app = (await import('fastify')).default({ logger: false })
    const broker = postgresBroker({ pool, table, ...options })
    await app.register(htmlSse, { heartbeatMs: 0, broker })
    app.addHook('onClose', () => broker.close())
    await app.ready()
    return { app, broker }
  }

  async function txLatency() {
    const { app } = await localApp(newTable())
    const N = 1000
    const html = renderHtml(1, 0n)
    const variants = {
      'INSERT + COMMIT, no publish': async (c) => {
        await c.query('BEGIN')
        await c.query('INSERT INTO notes (text) VALUES ($1)', [html])
        await c.query('COMMIT')
        return null
      },
      'INSERT + publish({ transaction }) + COMMIT': async (c) => {
        await c.query('BEGIN')
        await c.query('INSERT INTO notes (text) VALUES ($1)', [html])
        const t = performance.now()
        await app.sse.publish('bench', html, 'message', { transaction: c })
        const p = performance.now() - t
        await c.query('COMMIT')
        return p
      },
      'INSERT + COMMIT, then publish() (two steps)': async (c) => {
        await c.query('BEGIN')
        await c.query('INSERT INTO notes (text) VALUES ($1)', [html])
        await c.query('COMMIT')
        const t = performance.now()
        await app.sse.publish('bench', html)
        return performance.now() - t
      }
    }
    const res = Object.fromEntries(Object.keys(variants).map((k) => [k, { tx: [], publish: [] }]))
    const client = await pool.connect()
    for (let r = 0; r < o.rounds; r++) {
      log(`latency, round ${r + 1}/${o.rounds}`)
      for (const [name, fn] of Object.entries(variants)) {
        const tx = []
        const pub = []
        for (let i = 0; i < N; i++) {
          const t = performance.now()
          const p = await fn(client)
          tx.push(performance.now() - t)
          if (p !== null) pub.push(p)
        }
        tx.sort((a, b) => a - b)
        pub.sort((a, b) => a - b)
        res[name].tx.push({ p50: q(tx, 0.5), p99: q(tx, 0.99) })
        if (pub.length) res[name].publish.push({ p50: q(pub, 0.5), p99: q(pub, 0.99) })
      }
    }
    client.release()
    await app.close()
    const col = (list, key) => (list.length ? ms(median(list.map((x) => x[key]))) : '–')
    await save('postgres-latency', {
      title: 'Publish inside a transaction: latency',
      command: `${command} (latency)`,
      notes: [
        `${N} transactions per variant and round, one after another on one pooled connection, in this process (not pinned); ${o.rounds} rounds; the medians over rounds of each round's p50 / p99`,
        'the whole transaction: from BEGIN to COMMIT answered (two steps: COMMIT, then publish() answered); publish: the app.sse.publish() call alone (one INSERT … RETURNING with the ordering lock and pg_notify)',
        `PostgreSQL ${version}, synchronous_commit as the server has it (default on): every COMMIT waits for its WAL flush`
      ],
      tables: [
        {
          title: 'Latency, ms',
          head: ['variant', 'transaction p50', 'transaction p99', 'publish p50', 'publish p99'],
          rows: Object.entries(res).map(([name, v]) => [
            name,
            col(v.tx, 'p50'),
            col(v.tx, 'p99'),
            col(v.publish, 'p50'),
            col(v.publish, 'p99')
          ])
        }
      ],
      data: res
    })
  }

  async function orderCost() {
    const WORKERS = 16
    const SECONDS = 3
    const table = newTable()
    const { app } = await localApp(table)
    // The reference: the same row written the same way, with its notification, but no ordering lock.
    await pool.query(
      'CREATE TABLE unordered (id bigint PRIMARY KEY, topic text NOT NULL, body text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())'
    )
    await pool.query('CREATE SEQUENCE unordered_seq')
    const html = renderHtml(1, 0n)
    // Deliveries, to measure commit → delivered on another broker that listens.
    const committedAt = new Map()
    const deliveredAt = new Map()
    const listener = postgresBroker({ pool, table })
    await listener.listen((event) => {
      deliveredAt.set(event.id, performance.now())
    })
    const publishers = {
      'ordered (the broker)': (c) => app.sse.publish('bench', html, 'message', { transaction: c }),
      'unordered reference (no lock)': (c) =>
        c.query(
          "WITH e AS (INSERT INTO unordered (id, topic, body) SELECT nextval('unordered_seq'), 'bench', $1 RETURNING id) SELECT id::text, pg_notify('unordered', id::text) FROM e",
          [html]
        )
    }
    const cases = []
    for (const work of [0, 2]) for (const name of Object.keys(publishers)) cases.push({ name, work, long: false })
    cases.push({ name: 'ordered (the broker)', work: 0, long: true })
    const label = (c) => `${c.name}, ${c.work} ms work${c.long ? ', a long unrelated transaction open' : ''}`
    const res = Object.fromEntries(
      cases.map((c) => [label(c), { tps: [], p50: [], p99: [], d50: [], d99: [], lost: [] }])
    )
    const runCase = async (c) => {
      committedAt.clear()
      deliveredAt.clear()
      let long = null
      if (c.long) {
        long = await pool.connect()
        await long.query('BEGIN')
        await long.query("INSERT INTO notes (text) VALUES ('long')") // it holds a transaction id all along
      }
      const lat = []
      let committed = 0
      const end = performance.now() + SECONDS * 1000
      await Promise.all(
        Array.from({ length: WORKERS }, async () => {
          const client = await pool.connect()
          while (performance.now() < end) {
            const t = performance.now()
            await client.query('BEGIN')
            await client.query('INSERT INTO notes (text) VALUES ($1)', [html])
            const out = await publishers[c.name](client)
            if (c.work) await client.query('SELECT pg_sleep($1)', [c.work / 1000])
            await client.query('COMMIT')
            const done = performance.now()
            lat.push(done - t)
            committed++
            if (typeof out === 'string') committedAt.set(out, done)
          }
          client.release()
        })
      )
      if (long !== null) {
        await long.query('ROLLBACK')
        long.release()
      }
      const ordered = c.name.startsWith('ordered')
      const missing = () => [...committedAt.keys()].filter((id) => !deliveredAt.has(id)).length
      if (ordered) await until(() => missing() === 0, 'deliveries', 30_000).catch(() => null)
      // A delivery can be handled before the worker's COMMIT continuation runs: 0 then.
      const delivered = [...committedAt].flatMap(([id, t]) =>
        deliveredAt.has(id) ? [Math.max(0, deliveredAt.get(id) - t)] : []
      )
      lat.sort((a, b) => a - b)
      const d = [...delivered].sort((a, b) => a - b)
      const v = res[label(c)]
      v.tps.push(committed / SECONDS)
      v.p50.push(q(lat, 0.5))
      v.p99.push(q(lat, 0.99))
      if (ordered) {
        v.d50.push(q(d, 0.5))
        v.d99.push(q(d, 0.99))
        v.lost.push(missing())
      }
    }
    for (let r = 0; r < o.rounds; r++) {
      log(`order, round ${r + 1}/${o.rounds}`)
      await paired(r, (i) => runCase(cases[i]), cases.length)
    }
    await listener.close()
    await app.close()
    const bad = Object.entries(res).flatMap(([k, v]) => (v.lost.some((x) => x !== 0) ? [`${k}: lost ${v.lost}`] : []))
    const ref = (c) => res[label({ ...c, name: 'unordered reference (no lock)', long: false })]
    await save('postgres-order', {
      title: 'The ordering lock: 16 concurrent publishers',
      command: `${command} (order)`,
      notes: [
        `${WORKERS} workers in this process, each on its own pooled connection, for ${SECONDS} s per case: BEGIN; INSERT a note; publish; [work: pg_sleep]; COMMIT, in a loop. ${o.rounds} rounds, the cases in rotating order; medians over rounds; (×) against the unordered reference with the same work`,
        'ordered: app.sse.publish({ transaction }) (the advisory lock is taken before nextval and held to COMMIT); unordered reference: the same INSERT … RETURNING with nextval and pg_notify, no lock (what an outbox without an order would cost; its readers could pass a late commit)',
        'delivery: COMMIT answered → the event reaches the listener of another broker on the same table (its LISTEN connection), p50 / p99 ms; the long unrelated transaction has written a row and stays open for the whole case',
        checked(bad, 'every committed ordered event was delivered')
      ],
      tables: [
        {
          title: 'Result',
          head: [
            'case',
            'transactions/s',
            'transaction p50 ms',
            'transaction p99 ms',
            'delivery p50 ms',
            'delivery p99 ms'
          ],
          rows: cases.map((c) => {
            const v = res[label(c)]
            const x = (key) => (c.name.startsWith('ordered') ? ratio(v[key], ref(c)[key]) : null)
            return [
              label(c),
              { v: median(v.tps), x: x('tps') },
              { v: median(v.p50), x: x('p50') },
              { v: median(v.p99), x: x('p99') },
              v.d50.length ? ms(median(v.d50)) : '–',
              v.d99.length ? ms(median(v.d99)) : '–'
            ]
          })
        }
      ],
      data: res
    })
  }

  async function storm() {
    const N = 1000
    const BEHIND = 100
    const rows = []
    const bad = []
    for (let r = 0; r < o.rounds; r++) {
      log(`storm, round ${r + 1}/${o.rounds}`)
      const table = newTable()
      const publisher = await Side.start('publisher', pgOpts(table), { client: false })
      const seq0 = nextSeq(2 * BEHIND + 1)
      const ids = await publisher.server.rpc('prefill', { n: 2 * BEHIND, seq0 })
      // Started after the events were published: its window is what it read at start.
      const side = await Side.start('storm', pgOpts(table))
      const before = await side.server.rpc('queries')
      await side.load.rpc('arm', { k: BEHIND, expect: N })
      const t0 = performance.now()
      const headers = { 'last-event-id': ids[BEHIND - 1] }
      await side.load.rpc(
        'connect',
        { port: side.port, n: N, headers, pace: false, verify: 10, seq0: seq0 + BEHIND, retries: 30 },
        600_000
      )
      const replayed = await side.load.next('done', 120_000).catch(() => null)
      await side.load.rpc('arm', { k: 1 })
      await side.server.rpc('burst', { k: 1, seq0: seq0 + 2 * BEHIND })
      const done = replayed && (await side.load.next('done', 120_000).catch(() => null))
      const st = await side.load.rpc('status', {})
      const v = st.verify
      const took = performance.now() - t0
      const queries = (await side.server.rpc('queries')) - before - 1 // the live publish is one
      if (!done) bad.push(`round ${r + 1}: not every client got its ${BEHIND} + 1 events`)
      if (v.events !== 10 * (BEHIND + 1) || v.lost || v.dups || v.bad)
        bad.push(`round ${r + 1}: checked sockets ${JSON.stringify(v)}`)
      rows.push([
        r + 1,
        'HTTP: 1,000 clients, one Last-Event-ID, window prefilled at start',
        N,
        1,
        queries,
        Math.round(took)
      ])
      await Promise.all([publisher.stop(), side.stop()])

      // The replay path without a window: a broker that does not listen answers from the table, one query per id.
      const { pool: counting, counted } = await countingPool(url, 8)
      const cold = postgresBroker({ pool: counting, table })
      await cold.lastId() // sets up (reads the epoch)
      const q0 = counted.queries
      const distinct = ids.slice(BEHIND - 10, BEHIND)
      const replays = await Promise.all(Array.from({ length: N }, (_, i) => cold.replay(['bench'], distinct[i % 10])))
      // The live event makes 2 × BEHIND + 1 in the table: each replay must end with it and start right after its id.
      const wrong = replays.filter((rep, i) => {
        const j = BEHIND - 10 + (i % 10)
        return !rep.found || rep.events.length !== 2 * BEHIND - j || rep.events[0]?.id !== ids[j + 1]
      })
      if (wrong.length) bad.push(`round ${r + 1}: ${wrong.length} cold replays returned the wrong events`)
      rows.push([
        r + 1,
        'broker.replay() × 1,000 at once, 10 distinct ids, no window',
        N,
        10,
        counted.queries - q0,
        '–'
      ])
      await cold.close()
      await counting.end()
    }
    await save('postgres-storm', {
      title: 'Reconnect storm through Postgres: queries',
      command: `${command} (storm)`,
      notes: [
        `HTTP: ${2 * BEHIND} events published by another instance, then a fresh instance starts (its window is the newest 1,000 rows, read once at start); 1,000 clients connect at once with the id of the ${BEHIND}th; one live event follows; *queries* counts every query on the instance's pool (replays, lastId, publishes) minus the live publish; the LISTEN connection's reads are not in it`,
        'cold: 1,000 concurrent replay() calls on a broker that never listened (no window), over 10 distinct ids: concurrent replays of one id share one query',
        checked(
          bad,
          'every client got its 100 replayed events and the live one (10 sockets checked event by event); every cold replay returned exactly the events after its id'
        )
      ],
      tables: [
        {
          title: 'Per round',
          head: ['round', 'case', 'resumes', 'distinct ids', 'queries', 'all resumed and live, ms'],
          rows
        }
      ]
    })
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) await main()
