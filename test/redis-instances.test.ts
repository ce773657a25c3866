import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { childInstance, deleteKeys, openSse, REDIS_URL, redisApp, uniquePrefix, until } from './helpers/redis.js'

const prefixes = new Set<string>()
t.teardown(() => deleteKeys(prefixes))

function prefixFor(): string {
  const prefix = uniquePrefix()
  prefixes.add(prefix)
  return prefix
}

async function appFor(t: Test, prefix: string) {
  const made = await redisApp(REDIS_URL, prefix)
  t.teardown(() => made.app.close())
  return made
}

const drained = (app: FastifyInstance) => until(() => app.sse.stats().connections === 0, 3000, 'streams to close')

t.test('two instances in one process: a publish on either reaches the clients of both', async (t) => {
  const prefix = prefixFor()
  const a = await appFor(t, prefix)
  const b = await appFor(t, prefix)
  const onA = await openSse(`${a.base}/events?topics=news`)
  const onB = await openSse(`${b.base}/events?topics=news`)
  const other = await openSse(`${b.base}/events?topics=other`)
  const ids = [
    await a.app.sse.publish('news', '<p>from A</p>'),
    await b.app.sse.publish('news', '<p>from B</p>'),
    await a.app.sse.publish('news', '<p>multi\nline</p>', 'update')
  ]
  await onA.waitFor(3)
  await onB.waitFor(3)
  const expected = [
    { id: ids[0], event: undefined, data: '<p>from A</p>' },
    { id: ids[1], event: undefined, data: '<p>from B</p>' },
    { id: ids[2], event: 'update', data: '<p>multi\nline</p>' }
  ]
  const seen = (events: typeof onA.events) => events.map(({ id, event, data }) => ({ id, event, data }))
  t.same(seen(onA.events), expected, 'the client on A saw all three, in order, with their ids')
  t.same(seen(onB.events), expected, 'the client on B saw the same')
  t.same(other.events, [], 'a client of another topic saw none')
  t.equal(a.app.sse.stats().published, 2, 'A counts its own publishes')
  t.equal(b.app.sse.stats().published, 1, 'B counts its own publishes')
  for (const client of [onA, onB, other]) client.close()
  await drained(a.app)
  await drained(b.app)
})

t.test('a client that leaves A resumes on B with its Last-Event-ID: no gap, no duplicate', async (t) => {
  const prefix = prefixFor()
  const a = await appFor(t, prefix)
  const b = await appFor(t, prefix)
  const first = await openSse(`${a.base}/events?topics=x,y`)
  const before = [await a.app.sse.publish('x', '<p>1</p>'), await b.app.sse.publish('y', '<p>2</p>')]
  await first.waitFor(2)
  t.same(
    first.events.map((e) => e.id),
    before,
    'the first connection saw two events'
  )
  first.close()
  await drained(a.app)

  const missed = [
    await a.app.sse.publish('x', '<p>3</p>'),
    await b.app.sse.publish('z', '<p>not subscribed</p>'),
    await b.app.sse.publish('y', '<p>4</p>'),
    await a.app.sse.publish('y', '<p>5</p>')
  ]
  const resumed = await openSse(`${b.base}/events?topics=x,y`, { 'last-event-id': before[1] as string })
  await resumed.waitFor(3)
  const live = await a.app.sse.publish('x', '<p>6</p>')
  await resumed.waitFor(4)
  // A last event on another instance proves nothing else was on its way.
  const last = await b.app.sse.publish('y', '<p>7</p>')
  await resumed.waitFor(5)
  t.same(
    resumed.events.map((e) => [e.id, e.event, e.data]),
    [
      [missed[0], undefined, '<p>3</p>'],
      [missed[2], undefined, '<p>4</p>'],
      [missed[3], undefined, '<p>5</p>'],
      [live, undefined, '<p>6</p>'],
      [last, undefined, '<p>7</p>']
    ],
    'exactly the missed events of x and y, then live ones, each once'
  )

  const stale = await openSse(`${a.base}/events?topics=x`, { 'last-event-id': '1-1' })
  await stale.waitFor(1)
  t.same(
    stale.events.map((e) => [e.event, e.id]),
    [['reset', last]],
    'an id Redis does not hold gets a reset carrying the newest id'
  )
  resumed.close()
  stale.close()
  await drained(a.app)
  await drained(b.app)
})

t.test('an instance in a child process shares topics and resumes a client of the parent', async (t) => {
  const prefix = prefixFor()
  const parent = await appFor(t, prefix)
  const child = await childInstance(t, REDIS_URL, prefix)
  const onChild = await openSse(`${child.base}/events?topics=c`)
  const onParent = await openSse(`${parent.base}/events?topics=c`)
  const ids = [await parent.app.sse.publish('c', '<p>parent</p>'), await child.publish('c', '<p>child</p>')]
  await onChild.waitFor(2)
  await onParent.waitFor(2)
  const expected = [
    [ids[0], '<p>parent</p>'],
    [ids[1], '<p>child</p>']
  ]
  t.same(
    onChild.events.map((e) => [e.id, e.data]),
    expected,
    'the client of the child saw both'
  )
  t.same(
    onParent.events.map((e) => [e.id, e.data]),
    expected,
    'the client of the parent saw both'
  )

  onParent.close()
  const missed = [await child.publish('c', '<p>m1</p>'), await parent.app.sse.publish('c', '<p>m2</p>')]
  const moved = await openSse(`${child.base}/events?topics=c`, { 'last-event-id': ids[1] as string })
  await moved.waitFor(2)
  const live = await parent.app.sse.publish('c', '<p>live</p>')
  await moved.waitFor(3)
  t.same(
    moved.events.map((e) => [e.id, e.data]),
    [
      [missed[0], '<p>m1</p>'],
      [missed[1], '<p>m2</p>'],
      [live, '<p>live</p>']
    ],
    'a client moving from the parent to the child got exactly what it missed, then live'
  )
  onChild.close()
  moved.close()
  child.kill()
  await drained(parent.app)
})
