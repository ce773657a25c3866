import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { childInstance, privateRedis, type RedisAppOptions, redisApp, uniquePrefix } from './helpers/redis.js'
import { type Client, connect, until } from './helpers/sse.js'

const redis = await privateRedis(t)

async function appFor(t: Test, prefix: string, options: RedisAppOptions = {}) {
  const made = await redisApp(redis.url, prefix, undefined, options)
  t.teardown(() => made.app.close())
  return made
}

const drained = (app: FastifyInstance) => until(() => app.sse.stats().connections === 0, 3000, 'streams to close')
const seen = (client: Client) => client.events.map(({ id, event, data }) => ({ id, event, data }))

t.test('two instances in one process: a publish on either reaches the clients of both', async (t) => {
  const prefix = uniquePrefix()
  const a = await appFor(t, prefix)
  const b = await appFor(t, prefix)
  const onA = await connect(`${a.base}/events?topics=news`)
  const onB = await connect(`${b.base}/events?topics=news`)
  const other = await connect(`${b.base}/events?topics=other`)
  const ids = [
    await a.app.sse.publish('news', '<p>from A</p>'),
    await b.app.sse.publish('news', '<p>from B</p>'),
    await a.app.sse.publish('news', '<p>multi\nline</p>', 'update'),
    await b.app.sse.publish('other', '<p>last</p>')
  ]
  await onA.waitFor(3)
  await onB.waitFor(3)
  await other.waitFor(1)
  const expected = [
    { id: ids[0], event: 'message', data: '<p>from A</p>' },
    { id: ids[1], event: 'message', data: '<p>from B</p>' },
    { id: ids[2], event: 'update', data: '<p>multi\nline</p>' }
  ]
  const plain = (c: Client) => seen(c).map((e) => ({ ...e, event: e.event ?? 'message' }))
  t.same(plain(onA), expected, 'the client on A saw all three, in order, with their ids')
  t.same(plain(onB), expected, 'the client on B saw the same')
  t.same(
    other.events.map((e) => e.id),
    [ids[3]],
    'a client of another topic saw only its own'
  )
  t.equal(a.app.sse.stats().published, 2, 'A counts its own publishes')
  t.equal(b.app.sse.stats().published, 2, 'B counts its own publishes')
  for (const client of [onA, onB, other]) client.close()
  await drained(a.app)
  await drained(b.app)
})

t.test('a client that leaves A resumes on B with its Last-Event-ID: no gap, no duplicate', async (t) => {
  const prefix = uniquePrefix()
  const a = await appFor(t, prefix)
  const b = await appFor(t, prefix)
  const first = await connect(`${a.base}/events?topics=x,y`)
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
  const resumed = await connect(`${b.base}/events?topics=x,y`, { 'last-event-id': before[1] as string })
  await resumed.waitFor(3)
  const live = await a.app.sse.publish('x', '<p>6</p>')
  await resumed.waitFor(4)
  // A last event on another instance proves nothing else was on its way.
  const last = await b.app.sse.publish('y', '<p>7</p>')
  await resumed.waitFor(5)
  t.same(
    resumed.events.map((e) => [e.id, e.data]),
    [
      [missed[0], '<p>3</p>'],
      [missed[2], '<p>4</p>'],
      [missed[3], '<p>5</p>'],
      [live, '<p>6</p>'],
      [last, '<p>7</p>']
    ],
    'exactly the missed events of x and y, then live ones, each once'
  )

  const stale = await connect(`${a.base}/events?topics=x`, { 'last-event-id': '1-1' })
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
  const prefix = uniquePrefix()
  const parent = await appFor(t, prefix)
  const child = await childInstance(t, redis.url, prefix)
  const onChild = await connect(`${child.base}/events?topics=c`)
  const onParent = await connect(`${parent.base}/events?topics=c`)
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
  const moved = await connect(`${child.base}/events?topics=c`, { 'last-event-id': ids[1] as string })
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

for (const maxBufferedBytes of [undefined, 256 * 1024]) {
  const label = maxBufferedBytes === undefined ? 'the default maxBufferedBytes' : 'maxBufferedBytes 256 KiB'
  t.test(`a burst of 3,000 x 2 KB through Redis reaches three reading clients whole (${label})`, async (t) => {
    const prefix = uniquePrefix()
    const a = await appFor(t, prefix)
    const b = await appFor(t, prefix, maxBufferedBytes === undefined ? {} : { maxBufferedBytes })
    const clients = await Promise.all([1, 2, 3].map(() => connect(`${b.base}/events?topics=burst`)))
    const html = (i: number) => `<p>${String(i).padStart(6, '0')}${'x'.repeat(2040)}</p>`
    const ids: string[] = []
    // 100 at a time: the reader on B gets batches of up to 1,000 entries (about 2 MB).
    for (let i = 0; i < 3000; i += 100) {
      ids.push(...(await Promise.all(Array.from({ length: 100 }, (_, j) => a.app.sse.publish('burst', html(i + j))))))
    }
    await Promise.all(clients.map((c) => c.waitFor(3000, 30_000)))
    for (const [n, client] of clients.entries()) {
      const got = client.events
      t.ok(
        got.length === 3000 && got.every((e, i) => e.id === ids[i] && e.data === html(i)),
        `client ${n + 1} got every event once, in order, intact`
      )
    }
    t.equal(b.app.sse.stats().dropped, 0, 'no client was dropped')
    t.equal(b.app.sse.stats().connections, 3, 'all three are still connected')
    for (const client of clients) client.close()
    await drained(b.app)
  })
}

t.test(
  'hundreds of resumes on one instance while another publishes: each gets the ids after its own, once, in order',
  async (t) => {
    const prefix = uniquePrefix()
    const a = await appFor(t, prefix)
    const b = await appFor(t, prefix)
    const published: string[] = []
    for (let i = 0; i < 40; i++) published.push(await b.app.sse.publish('r', `<p>${i}</p>`))
    let publishing = true
    const publisher = (async () => {
      let i = 40
      while (publishing) {
        published.push(await b.app.sse.publish('r', `<p>${i++}</p>`))
        await new Promise((resolve) => setImmediate(resolve))
      }
    })()
    const resumes: { from: string; got: string[] }[] = []
    const resume = async () => {
      const from = published.at(-20) as string
      const client = await connect(`${a.base}/events?topics=r`, { 'last-event-id': from })
      // 20 replayed, then live ones published meanwhile.
      await client.waitFor(25, 15_000)
      client.close()
      resumes.push({ from, got: client.events.map((e) => e.id as string) })
    }
    for (let round = 0; round < 10; round++) await Promise.all(Array.from({ length: 30 }, resume))
    publishing = false
    await publisher
    // Compared once every publish has settled: a client can get an event (through Redis) before
    // the publisher's own await has pushed its id.
    let exact = 0
    for (const { from, got } of resumes) {
      const start = published.indexOf(from) + 1
      const expected = published.slice(start, start + got.length)
      if (start > 0 && JSON.stringify(got) === JSON.stringify(expected)) exact++
      else t.same(got, expected, `a resume from ${from}`)
    }
    t.equal(exact, 300, '300 resumes, each exact')
    t.ok(published.length > 100, `${published.length} events published meanwhile`)
    await drained(a.app)
  }
)

t.test('a page rendered right after a burst resumes from lastId(): nothing from before it comes twice', async (t) => {
  const prefix = uniquePrefix()
  const a = await appFor(t, prefix)
  // Concurrent publishes: lastId() is the newest publish, usually ahead of the instance's reader.
  await Promise.all(Array.from({ length: 2000 }, (_, i) => a.app.sse.publish('burst', `<p>${i}</p>`)))
  const renderedAt = (await a.app.sse.lastId()) as string
  const page = await connect(`${a.base}/events?topics=burst&lastEventId=${encodeURIComponent(renderedAt)}`)
  await until(() => a.app.sse.stats().topics.burst === 1)
  const marker = await a.app.sse.publish('burst', '<p>marker</p>')
  await until(() => page.events.at(-1)?.id === marker, 10_000, 'the marker')
  t.same(
    page.events.map((e) => e.id),
    [marker],
    'only what was published after the render'
  )
  page.close()
  await drained(a.app)
})

t.test(
  'an instance stalled past the retention: its client gets every event in order, or a reset before a jump',
  async (t) => {
    const prefix = uniquePrefix()
    const retentionMs = 400
    const parent = await appFor(t, prefix, { retentionMs })
    const child = await childInstance(t, redis.url, prefix, { retentionMs })
    const client = await connect(`${child.base}/events?topics=g`)
    const published = [await parent.app.sse.publish('g', '<p>first</p>')]
    await client.waitFor(1)
    await child.block(4000)
    // Five times the retention, on Redis's clock, while the child's event loop is blocked.
    const msOf = (id: string) => Number(id.split('-')[0])
    let i = 0
    while (msOf(published.at(-1) as string) - msOf(published[0] as string) < 5 * retentionMs) {
      published.push(await parent.app.sse.publish('g', `<p>${i++}</p>`))
    }
    const marker = await parent.app.sse.publish('g', '<p>marker</p>')
    published.push(marker)
    await until(() => client.events.at(-1)?.id === marker, 20_000, 'the marker on the stalled instance')
    let resets = 0
    let previous: string | null = null
    let silentJumps = 0
    for (const event of client.events) {
      if (event.event === 'reset') {
        resets++
        previous = event.id ?? null
        continue
      }
      const expected: string | undefined = previous === null ? published[0] : published[published.indexOf(previous) + 1]
      if (event.id !== expected) silentJumps++
      previous = event.id ?? null
    }
    t.equal(silentJumps, 0, 'every event follows the one before it, or the reset before it')
    t.ok(
      resets >= 1,
      `the trimmed stream was reported (${resets} reset, ${client.events.length - resets} events of ${published.length})`
    )
    t.same((await child.stats()).dropped, 0, 'the child dropped nobody')
    client.close()
    child.kill()
  }
)
