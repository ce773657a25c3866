/**
 * App state across instances as tests: presence, revocation (`disconnect()`)
 * and keyed events, on two (or three) app instances sharing one backend, over
 * real sockets; one instance in a child process is killed with SIGKILL. Every
 * broker that shares state between instances runs this same suite (as every
 * broker runs `broker-contract.ts`); its own test file adds what only it has.
 *
 * @example
 * ```ts
 * appStateSuite(t, { name: 'Redis', space: uniquePrefix, instance: (t, prefix) => stateInstance(t, redisBroker({ url, prefix })), ... })
 * ```
 */
import type { Test } from 'tap'
import type { Broker, Presence } from '../../lib/index.js'
import { errorsIn } from './app.js'
import type { StateChild, StateInstance } from './app-state.js'
import { type Client, connect, until } from './sse.js'

/** What the suite asks of a backend. */
export interface AppStateBackend {
  /** Named in the timings the suite prints. */
  readonly name: string
  /** A new space (a Redis key prefix, a Postgres table) for one test: the instances of one space share state. */
  space(): string
  /**
   * An instance of `space`, closed when `t` ends. A `counted` one's work on
   * the backend counts in `ran` (a backend that counts server-wide counts
   * every instance's). With `wrap`, the app gets `wrap(broker)` instead of the broker.
   */
  instance(
    t: Test,
    space: string,
    options?: { counted?: boolean; wrap?: (broker: Broker) => Broker }
  ): Promise<StateInstance>
  /** An instance of `space` in a child process, to SIGKILL. */
  child(t: Test, space: string): Promise<StateChild>
  /** The names `ran` takes for what the backend runs (Redis: commands; Postgres: statements). */
  readonly operations: {
    /** Writes an instance's share of a topic's presence. */
    readonly share: string
    /** Runs once per `sharePresence` call: the renewal of the instance. */
    readonly renew: string
    /** What `presenceWork` counts (Redis: commands; Postgres: statements). */
    readonly work: string
    /** What one `presence()` call runs: each exactly once, or at least once. */
    readonly presence: ReadonlyArray<{ readonly name: string; readonly atLeast?: boolean }>
    /** Reads the log after an id that the recent window does not answer. */
    readonly range: string
  }
  /** How many times `operation` ran so far for `space`. */
  ran(space: string, operation: string): Promise<number>
  /** How many topic shares (or withdrawals) counted instances of `space` wrote so far. */
  topicsShared(space: string): Promise<number>
  /** Everything presence ran on the backend so far for `space`, in `operations.work`. */
  presenceWork(space: string): Promise<number>
  /** Removes every trace of presence of `space` from the backend, as a sweep of lapsed instances would. */
  forgetPresence(space: string): Promise<void>
  /** What `lastId()` answers for an empty log. */
  readonly emptyLogId: RegExp
  /** Rounds of the disconnect latency test. */
  readonly latencyRounds: number
  /** Asserts that nothing of `topic`'s presence is left behind in the backend. */
  nothingLeftOf(t: Test, space: string, topic: string): Promise<void>
  /** Asserts what the backend keeps of a SIGKILLed instance of `space` once it lapsed (the living one still shares `topic`). */
  afterKill?(t: Test, space: string, topic: string): Promise<void>
  /** Asserts what the backend keeps of `count` `disconnect()` calls, where it keeps a trace. */
  afterDisconnects?(t: Test, space: string, count: number): Promise<void>
}

/** Nearest-rank percentile of `values`. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y)
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] as number
}

/** Waits until every instance answers `expected` for `topic`. */
async function presenceIs(
  instances: StateInstance[],
  topic: string,
  expected: Presence,
  what: string,
  ms = 10_000
): Promise<void> {
  const wanted = JSON.stringify(expected)
  await until(
    async () => {
      for (const { app } of instances) if (JSON.stringify(await app.sse.presence(topic)) !== wanted) return false
      return true
    },
    ms,
    what
  )
}

const events = (client: Client) => client.events.map((e) => [e.event ?? 'message', e.data])

/** `broker` without `presenceRenewal`, as a broker written for the earlier contract is. */
export function withoutRenewal(broker: Broker): Broker {
  const { sharePresence, presence, useLogger } = broker
  return {
    publish: (topic, body, options) => broker.publish(topic, body, options),
    replay: (topics, lastId) => broker.replay(topics, lastId),
    lastId: (options) => broker.lastId(options),
    listen: (listener, onGap) => broker.listen(listener, onGap),
    unlisten: (listener) => broker.unlisten(listener),
    close: () => broker.close(),
    ...(sharePresence && { sharePresence: sharePresence.bind(broker) }),
    ...(presence && { presence: presence.bind(broker) }),
    ...(useLogger && { useLogger: useLogger.bind(broker) })
  }
}

/** Registers the app-state tests of `backend` on `t`. */
export function appStateSuite(t: Test, backend: AppStateBackend): void {
  const { operations } = backend
  const ran = backend.ran.bind(backend)

  t.test('presence adds up both instances and follows opens and closes', async (t) => {
    const space = backend.space()
    const a = await backend.instance(t, space)
    const b = await backend.instance(t, space)
    const open = (base: string, query: string) => connect(`${base}/events?${query}`)
    const zoeA = await open(a.base, 'member=zoe')
    const bobA = await open(a.base, 'member=Bob')
    const annA = await open(a.base, 'member=ann&topics=room,other')
    const zoeB = await open(b.base, 'member=zoe')
    const anonB = await open(b.base, '')
    const cidB = await open(b.base, 'member=cid&topics=other')
    await presenceIs([a, b], 'room', { streams: 5, members: ['Bob', 'ann', 'zoe'] }, 'room on both instances')
    await presenceIs([a, b], 'other', { streams: 2, members: ['ann', 'cid'] }, 'other on both instances')
    t.same(
      await b.app.sse.presence('room'),
      { streams: 5, members: ['Bob', 'ann', 'zoe'] },
      'five streams; members distinct (zoe on both) and sorted as JS sorts (Bob before ann); the stream without a member counts in streams'
    )
    t.same(await a.app.sse.presence('nobody'), { streams: 0, members: [] }, 'a topic without streams')

    bobA.close()
    anonB.close()
    zoeA.close()
    await presenceIs([a, b], 'room', { streams: 2, members: ['ann', 'zoe'] }, 'the closes on both instances')
    t.pass('closes on both instances show on both')

    // An instance that closes takes its shares back before its close resolves.
    await b.app.close()
    t.same(await a.app.sse.presence('room'), { streams: 1, members: ['ann'] }, "room without B's streams at once")
    t.same(await a.app.sse.presence('other'), { streams: 1, members: ['ann'] }, "other without B's streams at once")
    for (const client of [annA, zoeB, cidB]) client.close()
    await presenceIs([a], 'room', { streams: 0, members: [] }, 'the last close')
    await backend.nothingLeftOf(t, space, 'room')
    t.same(errorsIn(a.logs), [], 'no errors logged')
  })

  t.test('presence costs per topic, not per stream', async (t) => {
    const space = backend.space()
    const a = await backend.instance(t, space, { counted: true })
    const b = await backend.instance(t, space, { counted: true })
    const sharesBefore = await ran(space, operations.share)
    const clients = await Promise.all(
      Array.from({ length: 200 }, (_, i) => connect(`${(i % 2 ? a : b).base}/events?topics=crowd&member=m${i % 7}`))
    )
    const members = Array.from({ length: 7 }, (_, i) => `m${i}`)
    await presenceIs([a, b], 'crowd', { streams: 200, members }, '200 streams on two instances')
    const shares = (await ran(space, operations.share)) - sharesBefore
    t.comment(`${backend.name}: 200 streams opened on two instances: ${shares} ${operations.share}`)
    t.ok(
      shares < 100,
      `${operations.share}: ${shares}, fewer than half the streams: shares are per topic and coalesced`
    )

    const before = await Promise.all(operations.presence.map(({ name }) => ran(space, name)))
    const answers = await Promise.all(Array.from({ length: 20 }, () => a.app.sse.presence('crowd')))
    t.ok(
      answers.every((p) => p.streams === 200 && p.members.join() === members.join()),
      'twenty presence calls'
    )
    for (const [i, { name, atLeast }] of operations.presence.entries()) {
      const calls = (await ran(space, name)) - (before[i] as number)
      if (atLeast) t.ok(calls >= 20, `${name}: at least one a call (${calls})`)
      else t.equal(calls, 20, `${name}: one a call`)
    }
    for (const client of clients) client.close()
    await presenceIs([a, b], 'crowd', { streams: 0, members: [] }, 'every stream closed')
  })

  t.test('a renewal costs the same for 1,000 topics; a broker without presenceRenewal gets every topic', async (t) => {
    const topics = Array.from({ length: 1000 }, (_, i) => `u${i}`)
    const per: string[] = []
    for (const renews of [true, false]) {
      const space = backend.space()
      const a = await backend.instance(t, space, { counted: true, ...(renews ? {} : { wrap: withoutRenewal }) })
      const clients = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          connect(`${a.base}/events?member=m${i}&topics=${topics.slice(i * 100, i * 100 + 100).join(',')}`)
        )
      )
      await presenceIs([a], 'u999', { streams: 1, members: ['m9'] }, 'the last topic shared')
      // After two more calls (past the first renewal: every change shared by then), over the next two: only renewals.
      const renewals = () => ran(space, operations.renew)
      const first = await renewals()
      await until(async () => (await renewals()) >= first + 2, 15_000, 'a renewal')
      // Counts read twice alike: no share half done (a backend counting per command may be read mid-pipeline).
      const settled = async () => {
        let last = ''
        let counts: number[] = []
        await until(async () => {
          counts = [await renewals(), await backend.topicsShared(space), await backend.presenceWork(space)]
          const same = JSON.stringify(counts) === last
          last = JSON.stringify(counts)
          return same
        })
        return counts
      }
      const from = await settled()
      await until(async () => (await renewals()) >= (from[0] as number) + 2, 15_000, 'two more renewals')
      const to = await settled()
      const [count, shared, work] = to.map((n, i) => n - (from[i] as number)) as [number, number, number]
      const line = `${renews ? 'with' : 'without'} presenceRenewal: ${(work / count).toFixed(1)} ${operations.work} and ${(shared / count).toFixed(0)} topic writes per renewal`
      per.push(line)
      if (renews) t.equal(shared, 0, `with presenceRenewal, ${count} renewals of 1,000 topics write no topic`)
      else t.ok(shared >= 1000, `without it, the renewals share every topic again (${shared} topic writes)`)
      t.same(await a.app.sse.presence('u500'), { streams: 1, members: ['m5'] }, 'presence holds between renewals')
      for (const client of clients) client.close()
      await presenceIs([a], 'u999', { streams: 0, members: [] }, 'every stream closed')
      // Its renewals must not count in the next round (a backend may count server-wide).
      await a.app.close()
    }
    t.comment(`${backend.name}, 1,000 topics on one instance: ${per.join('; ')}`)
  })

  t.test('an instance whose shares were swept while it lived shares every topic again', async (t) => {
    const space = backend.space()
    const a = await backend.instance(t, space)
    const b = await backend.instance(t, space)
    const clients = [
      await connect(`${a.base}/events?member=ann&topics=room,other`),
      await connect(`${b.base}/events?member=bob`)
    ]
    await presenceIs([a, b], 'room', { streams: 2, members: ['ann', 'bob'] }, 'both instances')
    await backend.forgetPresence(space)
    t.same(await a.app.sse.presence('room'), { streams: 0, members: [] }, 'gone from the backend')
    await presenceIs([a, b], 'room', { streams: 2, members: ['ann', 'bob'] }, 'shared again after a renewal')
    await presenceIs([a, b], 'other', { streams: 1, members: ['ann'] }, 'every topic')
    t.pass('each instance, told at its renewal that it was not live, shared its topics again')
    for (const client of clients) client.close()
  })

  t.test('an instance killed with SIGKILL leaves presence by itself', async (t) => {
    const space = backend.space()
    const child = await backend.child(t, space)
    const a = await backend.instance(t, space)
    const onChild = [
      await connect(`${child.base}/events?member=kid`),
      await connect(`${child.base}/events`),
      await connect(`${child.base}/events?member=ann`)
    ]
    const annA = await connect(`${a.base}/events?member=ann`)
    await presenceIs([a], 'room', { streams: 4, members: ['ann', 'kid'] }, "the child's streams and A's")
    t.pass("the child's streams count")
    const killedAt = performance.now()
    await child.kill()
    await Promise.all(onChild.map((c) => c.ended))
    // The bound is the 12 s TTL and a read: a wait that passes it fails, naming what it awaited.
    await presenceIs([a], 'room', { streams: 1, members: ['ann'] }, "the killed instance's shares to lapse", 16_000)
    t.pass('only the living instance counts, within the 12 s TTL and a read')
    t.comment(
      `${backend.name}: the killed instance left presence ${Math.round(performance.now() - killedAt)} ms after SIGKILL`
    )
    await backend.afterKill?.(t, space, 'room')
    annA.close()
  })

  t.test('disconnect() ends the matching streams on both instances after revoked; others go on', async (t) => {
    const space = backend.space()
    const a = await backend.instance(t, space)
    const b = await backend.instance(t, space)
    const annA = await connect(`${a.base}/events?member=ann`)
    const annB = await connect(`${b.base}/events?member=ann&topics=other`)
    const cidA = await connect(`${a.base}/events?member=cid&topics=other`)
    const danB = await connect(`${b.base}/events?member=dan&topics=room,other`)
    const bobA = await connect(`${a.base}/events?member=bob`)
    const bobB = await connect(`${b.base}/events?member=bob`)
    const anonB = await connect(`${b.base}/events`)
    await until(() => a.app.sse.stats().connections === 3 && b.app.sse.stats().connections === 4)

    await a.app.sse.disconnect({ member: 'ann' })
    await Promise.all([annA.ended, annB.ended])
    t.same([events(annA), events(annB)], [[['revoked', '']], [['revoked', '']]], "ann's streams on A and B: revoked")

    await b.app.sse.disconnect({ topic: 'other' })
    await Promise.all([cidA.ended, danB.ended])
    t.same(
      [events(cidA), events(danB)],
      [[['revoked', '']], [['revoked', '']]],
      "the streams of topic other on A and B (dan's also has room): revoked"
    )

    // Both fields must match: bob has no stream of other.
    await a.app.sse.disconnect({ member: 'bob', topic: 'other' })
    const marker = await b.app.sse.publish('room', '<p>marker</p>')
    const untouched = [bobA, bobB, anonB]
    await until(() => untouched.every((c) => c.events.at(-1)?.id === marker), 5000, 'the marker on the untouched')
    t.same(
      untouched.map(events),
      [[['message', '<p>marker</p>']], [['message', '<p>marker</p>']], [['message', '<p>marker</p>']]],
      'the streams that matched nothing got nothing but the marker'
    )
    t.equal(a.app.sse.stats().connections + b.app.sse.stats().connections, 3, 'and are still open')
    await backend.afterDisconnects?.(t, space, 3)
    for (const client of untouched) client.close()
    t.same([...errorsIn(a.logs), ...errorsIn(b.logs)], [], 'no errors logged')
  })

  t.test('disconnect latency across two instances (printed, not asserted)', async (t) => {
    const space = backend.space()
    const a = await backend.instance(t, space)
    const b = await backend.instance(t, space)
    const bystander = await connect(`${b.base}/events?member=stay&topics=room,other`)
    const rounds = backend.latencyRounds
    const latencies: number[] = []
    for (let i = 0; i < rounds; i++) {
      const member = `m${i}`
      const clients = await Promise.all([
        connect(`${a.base}/events?member=${member}`),
        connect(`${a.base}/events?member=${member}&topics=other`),
        connect(`${b.base}/events?member=${member}`),
        connect(`${b.base}/events?member=${member}&topics=room,other`)
      ])
      await until(() => a.app.sse.stats().connections === 2 && b.app.sse.stats().connections === 3)
      const ends = clients.map((c) => c.ended.then(() => performance.now()))
      const start = performance.now()
      await (i % 2 ? a : b).app.sse.disconnect({ member })
      latencies.push(Math.max(...(await Promise.all(ends))) - start)
      if (!clients.every((c) => JSON.stringify(events(c)) === '[["revoked",""]]')) {
        t.fail(`round ${i}: every stream of ${member} gets revoked, then ends`)
      }
    }
    const marker = await a.app.sse.publish('room', '<p>marker</p>')
    await until(() => bystander.events.at(-1)?.id === marker, 5000, 'the marker on the bystander')
    t.same(events(bystander), [['message', '<p>marker</p>']], 'the bystander of every round got only the marker')
    bystander.close()
    const p50 = percentile(latencies, 50)
    const p99 = percentile(latencies, 99)
    t.comment(
      `${backend.name}: disconnect() to the last of 4 streams ended on 2 instances, ${rounds} rounds: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms`
    )
    t.equal(latencies.length, rounds, 'every round measured')
  })

  t.test('keyed events: a resume on another instance gets the newest of each key in its place', async (t) => {
    const space = backend.space()
    const a = await backend.instance(t, space)
    const b = await backend.instance(t, space, { counted: true })
    const start = await b.app.sse.lastId()
    t.match(start, backend.emptyLogId, 'the id before the first event of an empty log')
    const live = await connect(`${a.base}/events`)
    const early = await connect(`${b.base}/events`)
    await until(() => a.app.sse.stats().connections === 1 && b.app.sse.stats().connections === 1)
    const hello = await a.app.sse.publish('room', '<p>hello</p>')
    await until(() => early.events.at(-1)?.id === hello, 5000, 'the first event on B')
    early.close()

    const all: string[] = ['<p>hello</p>']
    for (let i = 1; i <= 100; i++) {
      const progress = `<progress value="${i}"></progress>`
      await a.app.sse.publish('room', progress, 'message', { key: 'job-1' })
      all.push(progress)
      if (i % 25 === 0) {
        await a.app.sse.publish('room', `<p>note ${i}</p>`)
        all.push(`<p>note ${i}</p>`)
      }
      if (i % 50 === 0) {
        await a.app.sse.publish('room', `<b>other ${i}</b>`, 'message', { key: 'job-2' })
        all.push(`<b>other ${i}</b>`)
      }
    }
    // The same key on another topic supersedes nothing of room.
    await b.app.sse.publish('elsewhere', '<p>same key</p>', 'message', { key: 'job-1' })
    const end = await a.app.sse.publish('room', '<p>end</p>')
    all.push('<p>end</p>')
    const expected = ['<p>note 25</p>', '<p>note 50</p>', '<p>note 75</p>', '<progress value="100"></progress>']
    expected.push('<p>note 100</p>', '<b>other 100</b>', '<p>end</p>')

    const resumeOn = async (base: string, lastId: string) => {
      const client = await connect(`${base}/events`, { 'last-event-id': lastId })
      await until(() => client.events.at(-1)?.id === end, 5000, 'the resume')
      client.close()
      return client.events.map((e) => e.data)
    }
    const ranges = () => ran(space, operations.range)

    let before = await ranges()
    t.same(await resumeOn(b.base, hello), expected, 'on B, from its window: the newest of each key, in its place')
    t.same(
      await resumeOn(b.base, start as string),
      ['<p>hello</p>', ...expected],
      'on B from the empty log id: the same after hello'
    )
    t.equal((await ranges()) - before, 0, `both from the window (${operations.range}: none)`)

    // An instance started now fills its window from the log; it reads the empty log's id with a range read.
    const c = await backend.instance(t, space, { counted: true })
    before = await ranges()
    t.same(await resumeOn(c.base, hello), expected, 'on C, from the window it filled at start')
    t.equal((await ranges()) - before, 0, `${operations.range}: none`)
    t.same(
      await resumeOn(c.base, start as string),
      ['<p>hello</p>', ...expected],
      `on C from the empty log id, through the ${operations.range}: the same after hello`
    )
    t.equal((await ranges()) - before, 1, `${operations.range}: one`)

    await until(() => live.events.at(-1)?.id === end, 5000, 'the live client')
    t.same(
      live.events.map((e) => e.data),
      all,
      'the live client got every event, keyed or not, in order'
    )
    live.close()
  })
}
