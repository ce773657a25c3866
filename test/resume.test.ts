import { setImmediate as tick } from 'node:timers/promises'
import { type Test, test } from 'tap'
import { makeApp } from './helpers/app.js'
import { type Client, connect, listen, until } from './helpers/sse.js'

const seq = (id: string | undefined) => Number(String(id).split('-')[1])

async function setup(t: Test, replay = 1000) {
  const { app, logs } = await makeApp({ replay })
  app.get('/events', (req, reply) => {
    const topics = String((req.query as { topics?: string }).topics ?? 'a,b').split(',')
    reply.sse({ topics })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  return { app, base, logs }
}

test('Last-Event-ID: missed events of the sink topics first, in order, then live ones', async (t) => {
  const { app, base } = await setup(t)
  const ids: string[] = []
  for (let i = 0; i < 6; i++) ids.push(await app.sse.publish(i % 2 ? 'b' : 'a', `<p>${i}</p>`))
  const both = await connect(`${base}/events?topics=a,b`, { 'last-event-id': ids[1] as string })
  const onlyA = await connect(`${base}/events?topics=a`, { 'last-event-id': ids[1] as string })
  const viaQuery = await connect(`${base}/events?topics=b&lastEventId=${ids[2]}`)
  await both.waitFor(4)
  await onlyA.waitFor(2)
  await viaQuery.waitFor(2)
  const live = await app.sse.publish('a', '<p>live</p>')
  await both.waitFor(5)
  await onlyA.waitFor(3)
  t.same(
    both.events.map((e) => [e.id, e.data]),
    [
      [ids[2], '<p>2</p>'],
      [ids[3], '<p>3</p>'],
      [ids[4], '<p>4</p>'],
      [ids[5], '<p>5</p>'],
      [live, '<p>live</p>']
    ]
  )
  t.same(
    onlyA.events.map((e) => e.data),
    ['<p>2</p>', '<p>4</p>', '<p>live</p>']
  )
  t.same(
    viaQuery.events.map((e) => e.data),
    ['<p>3</p>', '<p>5</p>']
  )
  const newest = await connect(`${base}/events`, { 'last-event-id': live })
  await app.sse.publish('b', '<p>after newest</p>')
  await newest.waitFor(1)
  t.same(
    newest.events.map((e) => e.data),
    ['<p>after newest</p>'],
    'resuming from the newest id sends no reset and nothing old'
  )
})

test('no gap and no duplicate while publishes race the handoff, for sinks on one or several topics', async (t) => {
  const { app, base } = await setup(t)
  const published: Array<{ id: string; topic: string }> = []
  const clients: Array<{ client: Client; topics: string[]; after: number }> = []
  const total = 1500
  for (let i = 0; i < total; i++) {
    const topic = i % 3 === 0 ? 'b' : 'a'
    published.push({ id: await app.sse.publish(topic, `<p>${i}</p>`), topic })
    if (i % 50 === 25) {
      const from = published[Math.floor(published.length / 2)] as { id: string }
      const topics = i % 100 === 25 ? ['a', 'b'] : ['a']
      // Connect without awaiting: the handoff happens while publishing goes on.
      void connect(`${base}/events?topics=${topics.join(',')}`, { 'last-event-id': from.id }).then((client) =>
        clients.push({ client, topics, after: seq(from.id) })
      )
    }
    if (i % 7 === 0) await tick()
  }
  await until(() => clients.length === 30, 5000, 'all clients')
  // A final marker on the topic every client has: anything extra would arrive before it.
  published.push({ id: await app.sse.publish('a', '<p>end</p>'), topic: 'a' })
  for (const { client, topics, after } of clients) {
    const want = published.filter((p) => seq(p.id) > after && topics.includes(p.topic)).map((p) => p.id)
    await until(() => client.events.at(-1)?.data === '<p>end</p>', 10_000, 'the final marker')
    const got = client.events.map((e) => e.id)
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      t.fail(`client from ${after} on ${topics}: ${got.length} events, want ${want.length}`)
    }
  }
  t.pass(`${clients.length} clients resumed with exact sequences`)
})

test('an unknown, expired or garbage id gives one reset event, never echoed, then live events', async (t) => {
  const { app, base, logs } = await setup(t, 3)
  const ids: string[] = []
  for (let i = 0; i < 10; i++) ids.push(await app.sse.publish('a', `<p>${i}</p>`))
  const garbage = [
    ids[2] as string, // expired: older than the 3 kept
    '99999999999-1', // unknown epoch
    `${(ids[0] as string).split('-')[0]}-999`, // from the future
    'x'.repeat(8 * 1024),
    'not-a-number',
    '-1',
    '1e3-2',
    '<script>alert(1)</script>'
  ]
  for (const id of garbage) {
    const client = await connect(`${base}/events?topics=a`, { 'last-event-id': id })
    await client.waitFor(1)
    t.equal(client.events[0]?.event, 'reset', `reset for ${id.slice(0, 30)}`)
    t.equal(client.events[0]?.id, ids[9], 'the reset carries the newest id, so the next reconnect resumes')
    t.notOk(client.raw.includes(`id: ${id}\n`), 'the bad id is never echoed')
    if (id.length > 6) t.notOk(client.raw.includes(id), 'nor any part of the stream holds it')
    const live = await app.sse.publish('a', '<p>live</p>')
    await client.waitFor(2)
    t.same(
      client.events.slice(1).map((e) => [e.id, e.data]),
      [[live, '<p>live</p>']]
    )
    ids.push(live)
    ids.splice(9, 1)
    client.close()
  }
  // The 3 newest are kept, so the id just before them still resumes, exactly.
  const all = [ids[9] as string]
  for (let i = 0; i < 3; i++) all.push(await app.sse.publish('a', `<p>more ${i}</p>`))
  const resumed = await connect(`${base}/events?topics=a`, { 'last-event-id': all[0] as string })
  await resumed.waitFor(3)
  t.same(
    resumed.events.map((e) => e.id),
    all.slice(1)
  )
  t.same(
    logs.filter((l) => l.level >= 50),
    []
  )
})

test('with replay 0 nothing is kept: any id but the newest resets', async (t) => {
  const { app, base } = await setup(t, 0)
  const first = await app.sse.publish('a', '<p>1</p>')
  const second = await app.sse.publish('a', '<p>2</p>')
  const old = await connect(`${base}/events?topics=a`, { 'last-event-id': first })
  await old.waitFor(1)
  t.equal(old.events[0]?.event, 'reset')
  const newest = await connect(`${base}/events?topics=a`, { 'last-event-id': second })
  await app.sse.publish('a', '<p>3</p>')
  await newest.waitFor(1)
  t.same(
    newest.events.map((e) => e.data),
    ['<p>3</p>']
  )
})

test("a reset on an empty log carries the empty log's id, from which the client resumes", async (t) => {
  const { app, base } = await setup(t)
  const client = await connect(`${base}/events?topics=a`, { 'last-event-id': '1-1' })
  await client.waitFor(1)
  t.equal(client.events[0]?.event, 'reset')
  const empty = await app.sse.lastId()
  t.equal(client.events[0]?.id, empty, 'the id before the first event, not an empty one')
  client.close()
  const first = await app.sse.publish('a', '<p>1</p>')
  const back = await connect(`${base}/events?topics=a`, { 'last-event-id': empty as string })
  await back.waitFor(1)
  t.same(
    back.events.map((e) => [e.id, e.data]),
    [[first, '<p>1</p>']],
    'coming back with it, the client gets what was published while it was away'
  )
  back.close()
})
