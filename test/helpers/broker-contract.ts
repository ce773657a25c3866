/**
 * The Broker contract as tests (the rules in lib/broker/types.ts): every broker
 * runs this same suite, as `mqemitter-redis` runs `mqemitter`'s abstract tests.
 *
 * @example
 * ```ts
 * brokerContract(t, 'memoryBroker', async ({ replay }) => memoryBroker({ replay }), { shared: false })
 * ```
 */
import type { Test } from 'tap'
import type { Broker, BrokerEvent } from '../../lib/broker/types.js'
import { compareIds, parseId } from '../../lib/broker/types.js'

/** What the suite asks of a broker factory. */
export interface MakeBrokerOptions {
  /** The broker's `replay` option; the broker's default when absent. */
  replay?: number
  /**
   * Brokers made with the same `space` share a backend when the broker can
   * (same Redis key prefix); each test uses a new space.
   */
  space: string
}

/** What the broker can do, so the suite knows what to expect. */
export interface BrokerCapabilities {
  /** Two brokers of one space see each other's events (Redis: yes; memory: no). */
  shared: boolean
  /**
   * Live events reach listeners in batches read from a backend (Redis), so the
   * broker paces them itself; otherwise each event is delivered inside its
   * `publish` call and the caller's pacing applies.
   */
  batches?: boolean
}

export type MakeBroker = (options: MakeBrokerOptions) => Promise<Broker>

const UNAVAILABLE = 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE'
const WAIT_MS = 3000

/** Ids that are not of the `<int>-<int>` form, or not of any event. */
const GARBAGE = [
  '',
  'abc',
  '1',
  '1-',
  '-1',
  '1-2-3',
  '01-1',
  '1-01',
  ' 1-1',
  '1-1 ',
  '1-1\n',
  '1.5-1',
  '-1-1',
  '+1-1',
  '1e3-1',
  '99999999999999999999-0',
  '0x10-1',
  '*',
  '$',
  '+',
  '-',
  '(1-1',
  '1-*',
  'ü-1',
  '\u0000'
]

/** Listens on `broker` and waits for events by count. */
async function collect(broker: Broker) {
  const events: BrokerEvent[] = []
  const waiters = new Set<() => void>()
  const listener = (event: BrokerEvent) => {
    events.push(event)
    for (const wake of waiters) wake()
  }
  await broker.listen(listener)
  return {
    events,
    listener,
    /** Resolves once `n` events arrived; rejects after `WAIT_MS`. */
    until(n: number): Promise<BrokerEvent[]> {
      if (events.length >= n) return Promise.resolve(events)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`saw ${events.length} of ${n} events within ${WAIT_MS} ms`))
        }, WAIT_MS)
        const check = () => {
          if (events.length < n) return
          clearTimeout(timer)
          waiters.delete(check)
          resolve(events)
        }
        waiters.add(check)
      })
    }
  }
}

const body = (n: number | string) => `data: <p>${n}</p>\n\n`
const frameOf = (id: string, b: string) => `id: ${id}\n${b}`
const summary = (events: readonly BrokerEvent[]) =>
  events.map((e) => ({ id: e.id, topic: e.topic, frame: e.frame.toString() }))

/** A new space name per test. */
function newSpace(): string {
  return `${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`
}

/**
 * Runs the contract suite as a subtest `name` of `t`. Every broker made is
 * closed at the end of its test.
 */
export function brokerContract(
  t: Test,
  name: string,
  makeBroker: MakeBroker,
  capabilities: BrokerCapabilities = { shared: false }
): Promise<unknown> {
  return t.test(`${name}: the Broker contract`, async (t) => {
    /** A fresh space for one test, and a factory of brokers in it closed at teardown. */
    const spaceFor = (tt: Test) => {
      const space = newSpace()
      return async (replay?: number) => {
        const broker = await makeBroker(replay === undefined ? { space } : { space, replay })
        tt.teardown(() => broker.close())
        return broker
      }
    }

    t.test('ids are <a>-<b> and increase across topics', async (t) => {
      const broker = await spaceFor(t)()
      const ids: string[] = []
      for (let i = 0; i < 30; i++) ids.push(await broker.publish(['a', 'b', 'c'][i % 3] as string, body(i)))
      for (const id of ids) t.ok(parseId(id), `${id} has the <a>-<b> form`)
      for (let i = 1; i < ids.length; i++) {
        t.ok(compareIds(ids[i - 1] as string, ids[i] as string) < 0, `${ids[i - 1]} < ${ids[i]}`)
      }
      t.equal(new Set(ids).size, ids.length, 'no id repeats')
    })

    t.test('every listener gets every event once, in order, framed with its id', async (t) => {
      const broker = await spaceFor(t)()
      const one = await collect(broker)
      const two = await collect(broker)
      const expected: Array<{ id: string; topic: string; frame: string }> = []
      for (let i = 0; i < 12; i++) {
        const topic = i % 2 === 0 ? 'a' : 'b'
        const id = await broker.publish(topic, body(i))
        expected.push({ id, topic, frame: frameOf(id, body(i)) })
      }
      await one.until(12)
      await two.until(12)
      // A last event proves nothing else was on its way before it.
      const last = await broker.publish('c', body('last'))
      await one.until(13)
      await two.until(13)
      expected.push({ id: last, topic: 'c', frame: frameOf(last, body('last')) })
      t.same(summary(one.events), expected, 'the first listener saw each event once, in publish order')
      t.same(summary(two.events), expected, 'the second listener too')
      t.ok(
        one.events.every((e) => Buffer.isBuffer(e.frame)),
        'frames are Buffers'
      )
    })

    t.test('a keyed event keeps its key; a key that is not a name is refused with the coded error', async (t) => {
      const broker = await spaceFor(t)()
      const seen = await collect(broker)
      const keyed = await broker.publish('a', body('keyed'), { key: 'row-1' })
      for (const key of ['', '\uD800', 7 as unknown as string]) {
        await t.rejects(
          broker.publish('a', body('bad key'), { key }),
          { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' },
          `key ${JSON.stringify(key)} is refused`
        )
      }
      const after = await broker.publish('a', body('after'))
      await seen.until(2)
      t.same(
        seen.events.map((e) => [e.id, e.key]),
        [
          [keyed, 'row-1'],
          [after, undefined]
        ],
        'the keyed event came with its key, then the marker: nothing of the refused publishes'
      )
    })

    t.test('a listener gets what is published after listen(), and nothing after unlisten()', async (t) => {
      const broker = await spaceFor(t)()
      await broker.publish('a', body('before'))
      const gone = await collect(broker)
      const stays = await collect(broker)
      const first = await broker.publish('a', body(1))
      await gone.until(1)
      await broker.unlisten(gone.listener)
      const second = await broker.publish('a', body(2))
      await stays.until(2)
      t.same(
        gone.events.map((e) => e.id),
        [first],
        'the removed listener saw only the event before unlisten'
      )
      t.same(
        stays.events.map((e) => e.id),
        [first, second],
        'the other listener saw both, and not the one before it listened'
      )
    })

    t.test('replay after an id returns exactly the later events of the asked topics, in order', async (t) => {
      const broker = await spaceFor(t)()
      const published: Array<{ id: string; topic: string; frame: string }> = []
      for (let i = 0; i < 9; i++) {
        const topic = ['a', 'b', 'c'][i % 3] as string
        const id = await broker.publish(topic, body(i))
        published.push({ id, topic, frame: frameOf(id, body(i)) })
      }
      const from = published[2]?.id as string
      const replay = await broker.replay(['a', 'c'], from)
      t.ok(replay.found, 'the id is found')
      if (!replay.found) return
      t.same(
        summary(replay.events),
        published.slice(3).filter((e) => e.topic !== 'b'),
        'the later events of a and c, in order, with their frames'
      )
      const all = await broker.replay(['a', 'b', 'c', 'nobody'], published[0]?.id as string)
      t.same(all.found && summary(all.events), published.slice(1), 'every later event, across topics')
      const none = await broker.replay([], from)
      t.same(none, { found: true, events: [] }, 'no topics: found, with nothing to send')
      const other = await broker.replay(['nobody'], from)
      t.same(other, { found: true, events: [] }, 'a topic without events: found, with nothing to send')
    })

    t.test('the newest id resumes with no events', async (t) => {
      const broker = await spaceFor(t)()
      await broker.publish('a', body(1))
      const newest = await broker.publish('b', body(2))
      t.same(await broker.replay(['a', 'b'], newest), { found: true, events: [] })
    })

    t.test('unknown and garbage ids are not found and give the newest id', async (t) => {
      const make = spaceFor(t)
      const broker = await make()
      const empty = await broker.lastId()
      t.same(
        await broker.replay(['a'], 'abc'),
        { found: false, head: empty },
        "before any event, the head is the empty log's id"
      )
      const first = await broker.publish('a', body(1))
      const newest = await broker.publish('a', body(2))
      for (const id of GARBAGE) {
        t.same(await broker.replay(['a'], id), { found: false, head: newest }, `garbage ${JSON.stringify(id)}`)
      }
      const [a, b] = parseId(newest) as [number, number]
      const [fa] = parseId(first) as [number, number]
      // `0-0` is Redis's empty-log id, which the next test covers; for the memory broker it is unknown.
      const unknown = ['0-0', `${a}-${b + 7}`, `${a + 1_000_000}-0`, `${Math.max(0, fa - 1)}-0`].filter(
        (id) => id !== empty
      )
      for (const id of unknown) {
        t.same(await broker.replay(['a'], id), { found: false, head: newest }, `unknown ${id}`)
      }
    })

    t.test('the replay window expires old ids', async (t) => {
      const make = spaceFor(t)
      const broker = await make(3)
      const ids: string[] = []
      for (let i = 0; i < 6; i++) ids.push(await broker.publish('a', body(i)))
      const newest = ids[5] as string
      t.same(
        await broker.replay(['a'], ids[1] as string),
        { found: false, head: newest },
        'an id with 4 later events is out of a window of 3'
      )
      const inWindow = await broker.replay(['a'], ids[2] as string)
      t.same(
        inWindow.found && inWindow.events.map((e) => e.id),
        ids.slice(3),
        'an id with 3 later events resumes with them'
      )

      const none = await spaceFor(t)(0)
      const n1 = await none.publish('a', body(1))
      const n2 = await none.publish('a', body(2))
      t.same(await none.replay(['a'], n2), { found: true, events: [] }, 'replay 0: the newest id resumes')
      t.same(await none.replay(['a'], n1), { found: false, head: n2 }, 'replay 0: any older id is a reset')
    })

    t.test('close stops delivery and rejects later publishes with the coded error', async (t) => {
      const make = spaceFor(t)
      const broker = await make()
      const seen = await collect(broker)
      await broker.publish('a', body(1))
      await seen.until(1)
      await broker.close()
      await t.rejects(broker.publish('a', body(2)), { code: UNAVAILABLE }, 'publish after close')
      await t.resolves(broker.close(), 'close is idempotent')
      if (capabilities.shared) {
        const other = await make()
        const watcher = await collect(other)
        await other.publish('a', body(3))
        // The event reached the backend: close has returned, so nothing can deliver it any more.
        await watcher.until(1)
      }
      t.equal(seen.events.length, 1, 'nothing was delivered after close')
    })

    t.test("the empty log's id expires like any other once more than `replay` events followed it", async (t) => {
      const broker = await spaceFor(t)(3)
      const empty = (await broker.lastId()) as string
      const seen = await collect(broker)
      const ids: string[] = []
      for (let i = 0; i < 3; i++) ids.push(await broker.publish('a', body(i)))
      await seen.until(3)
      const three = await broker.replay(['a'], empty)
      t.same(three.found && three.events.map((e) => e.id), ids, 'three events: all of them')
      ids.push(await broker.publish('a', body(3)))
      await seen.until(4)
      t.same(await broker.replay(['a'], empty), { found: false, head: ids[3] }, 'four: not found, with the newest id')

      const none = await spaceFor(t)(0)
      const noneEmpty = (await none.lastId()) as string
      const noneSeen = await collect(none)
      t.same(await none.replay(['a'], noneEmpty), { found: true, events: [] }, 'replay 0, nothing yet: found')
      const only = await none.publish('a', body('x'))
      await noneSeen.until(1)
      t.same(await none.replay(['a'], noneEmpty), { found: false, head: only }, 'replay 0, one event: not found')
    })

    t.test('lastId() is an id before the first event for an empty log, then the newest id', async (t) => {
      const make = spaceFor(t)
      const broker = await make()
      const empty = await broker.lastId()
      t.type(empty, 'string', 'empty, nobody listening: an id all the same')
      t.same(await broker.replay(['a'], empty as string), { found: true, events: [] }, 'a replay from it: nothing yet')
      const seen = await collect(broker)
      t.equal(await broker.lastId(), empty, 'empty, with a listener: the same id')
      const ids: string[] = []
      for (let i = 0; i < 5; i++) ids.push(await broker.publish(i % 2 === 0 ? 'a' : 'b', body(i)))
      await seen.until(5)
      const fromEmpty = await broker.replay(['a'], empty as string)
      t.same(
        fromEmpty.found && fromEmpty.events.map((e) => e.id),
        [ids[0], ids[2], ids[4]],
        "a replay from the empty log's id: every event of the topic since (a page rendered before the first event misses none)"
      )
      t.equal(await broker.lastId(), ids[4], 'the newest id once delivered')
      const more = await broker.publish('b', body('more'))
      t.equal(await broker.lastId(), more, 'right after a publish, before waiting for delivery')
      if (capabilities.shared) {
        const other = await make()
        t.equal(await other.lastId(), more, 'another broker of the space, not listening, agrees')
      }
    })

    t.test('a replay returns only events its listeners already got', async (t) => {
      const broker = await spaceFor(t)()
      const seen = await collect(broker)
      const from = await broker.publish('a', body('from'))
      await seen.until(1)
      const ids: string[] = []
      const checks: Array<Promise<void>> = []
      for (let i = 0; i < 300; i++) {
        const published = broker.publish(i % 2 === 0 ? 'a' : 'b', body(i))
        if (i % 10 === 9) {
          // Replays race the delivery of the events being published.
          checks.push(
            broker.replay(['a', 'b'], from).then((replay) => {
              const delivered = new Set(seen.events.map((e) => e.id))
              if (!replay.found) t.fail('a replay did not find its id')
              else {
                const ahead = replay.events.filter((e) => !delivered.has(e.id))
                if (ahead.length > 0) t.fail(`a replay returned ${ahead.length} events not yet delivered`)
              }
            })
          )
        }
        ids.push(await published)
      }
      await Promise.all(checks)
      await seen.until(301)
      const all = await broker.replay(['a', 'b'], from)
      t.same(all.found && all.events.map((e) => e.id), ids, 'once delivered, a replay returns them all, in order')
    })

    t.test('resumes while another publishes: exactly the later events, once, in order', async (t) => {
      const make = spaceFor(t)
      const broker = await make()
      const publisher = capabilities.shared ? await make() : broker
      // What the hub does: hold live events from subscribing on, replay, then
      // send the held events newer than the last one replayed.
      const held = new Set<BrokerEvent[]>()
      const all = await collect(broker)
      await broker.listen((event) => {
        for (const h of held) h.push(event)
      })
      const published: string[] = []
      for (let i = 0; i < 25; i++) published.push(await publisher.publish('a', body(`start ${i}`)))
      await all.until(25)
      let publishing = true
      const publishes = (async () => {
        let i = 0
        while (publishing) {
          published.push(await publisher.publish(i % 3 === 2 ? 'z' : 'a', body(i++)))
          await new Promise((resolve) => setImmediate(resolve))
        }
      })()
      const resumes: Array<{ from: string; got: string[]; held: BrokerEvent[] }> = []
      for (let r = 0; r < 60; r++) {
        // At least one new event each time, so the publisher is running while this resumes.
        await all.until(all.events.length + 1)
        const from = all.events.at(-1 - (r % 20))?.id as string
        const pending: BrokerEvent[] = []
        held.add(pending)
        const replay = await broker.replay(['a'], from)
        t.ok(replay.found, `resume ${r} found its id`)
        if (!replay.found) continue
        resumes.push({ from, got: replay.events.map((e) => e.id), held: pending })
      }
      publishing = false
      await publishes
      const marker = await publisher.publish('a', body('marker'))
      await all.until(published.length + 1)
      for (const h of held) held.delete(h)
      const order = all.events.map((e) => e.id)
      let exact = 0
      for (const { from, got, held: pending } of resumes) {
        const last = got.at(-1) ?? from
        for (const e of pending) if (e.topic === 'a' && compareIds(e.id, last) > 0) got.push(e.id)
        const expected = all.events
          .slice(order.indexOf(from) + 1)
          .filter((e) => e.topic === 'a')
          .map((e) => e.id)
        if (JSON.stringify(got) === JSON.stringify(expected)) exact++
        else t.same(got, expected, `resume from ${from}`)
      }
      t.equal(exact, resumes.length, `all ${resumes.length} resumes got exactly the events after their id`)
      t.equal(order.at(-1), marker, 'the marker came last')
      t.ok(resumes.length >= 50, `${resumes.length} resumes checked`)
    })

    if (capabilities.batches) {
      t.test('a batch is paced: a listener returning false gets I/O turns between events', async (t) => {
        const make = spaceFor(t)
        const broker = await make()
        const publisher = capabilities.shared ? await make() : broker
        let turned = true
        let starved = 0
        let calls = 0
        let saidFull = false
        let turnSince300: boolean | null = null
        let resolveDone = () => {}
        const done = new Promise<void>((resolve) => {
          resolveDone = resolve
        })
        await broker.listen((event) => {
          calls++
          if (saidFull && !turned) starved++
          turned = false
          setImmediate(() => {
            turned = true
          })
          if (calls === 300) {
            turnSince300 = false
            setImmediate(() => {
              turnSince300 = true
            })
          }
          if (event.frame.toString().includes('last')) resolveDone()
          // The first half says its sockets are full; the second half keeps up.
          saidFull = calls <= 250
          return !saidFull
        })
        // Published at once, so the reader gets them in a few large batches.
        await Promise.all(Array.from({ length: 499 }, (_, i) => publisher.publish('a', body(i))))
        await publisher.publish('a', body('last'))
        await done
        t.equal(calls, 500, 'every event delivered')
        t.equal(starved, 0, 'after each false, the next event waited for an I/O turn')
        t.equal(turnSince300, true, 'listeners that keep up still let I/O in within the batch')
      })
    }

    if (capabilities.shared) {
      t.test('brokers sharing the backend see each other events, in one sequence', async (t) => {
        const make = spaceFor(t)
        const x = await make()
        const y = await make()
        const onX = await collect(x)
        const onY = await collect(y)
        const ids = [
          await x.publish('a', body('x1')),
          await y.publish('b', body('y1')),
          await x.publish('b', body('x2')),
          await y.publish('a', body('y2'))
        ]
        await onX.until(4)
        await onY.until(4)
        t.same(
          onX.events.map((e) => e.id),
          ids,
          'x saw all four in order'
        )
        t.same(summary(onY.events), summary(onX.events), 'y saw the same events, frames included')
        const fromY = await y.replay(['a', 'b'], ids[0] as string)
        t.same(fromY.found && fromY.events.map((e) => e.id), ids.slice(1), 'y replays after an id x assigned')
      })
    } else {
      t.test('brokers do not share events', async (t) => {
        const make = spaceFor(t)
        const x = await make()
        const y = await make()
        const onY = await collect(y)
        const id = await x.publish('a', body(1))
        await y.publish('a', body(2))
        await onY.until(1)
        t.same(
          onY.events.map((e) => e.topic + e.frame.toString()),
          [`a${frameOf(onY.events[0]?.id as string, body(2))}`],
          'y saw only its own event'
        )
        t.ok(id, 'x published')
      })
    }
  })
}
