/**
 * The replay handoff when the broker is slow or failing: a broker that wraps
 * the memory broker and delays or rejects `replay`.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { type Broker, memoryBroker } from '../lib/index.js'
import { makeApp } from './helpers/app.js'
import { connect, listen, until } from './helpers/sse.js'

function wrapped(replay: (inner: Broker, topics: readonly string[], lastId: string) => ReturnType<Broker['replay']>) {
  const inner = memoryBroker()
  const broker: Broker = {
    publish: (topic, body) => inner.publish(topic, body),
    replay: (topics, lastId) => replay(inner, topics, lastId),
    lastId: () => inner.lastId(),
    listen: (listener) => inner.listen(listener),
    unlisten: (listener) => inner.unlisten(listener),
    close: () => inner.close()
  }
  return broker
}

test('a replay that fails starts the stream with a reset and goes live; it is logged as a warning', async (t) => {
  const broker = wrapped(() => Promise.reject(new Error('backend down')))
  const { app, logs } = await makeApp({ broker })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['a'] })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  await app.sse.publish('a', '<p>old</p>')
  const client = await connect(`${base}/events`, { 'last-event-id': '1-1' })
  await client.waitFor(1)
  t.equal(client.events[0]?.event, 'reset')
  t.equal(client.events[0]?.id, '', 'the reset clears the id')
  await app.sse.publish('a', '<p>live</p>')
  await client.waitFor(2)
  t.equal(client.events[1]?.data, '<p>live</p>')
  t.ok(logs.some((l) => l.level === 40 && /replay failed/.test(l.msg)))
})

test('live events that race a slow replay are neither lost nor repeated', async (t) => {
  const broker = wrapped(async (inner, topics, lastId) => {
    const result = await inner.replay(topics, lastId)
    await sleep(100) // live events arrive meanwhile
    return result
  })
  const { app } = await makeApp({ broker })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['a'] })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const first = await app.sse.publish('a', '<p>1</p>')
  await app.sse.publish('a', '<p>2</p>')
  const client = await connect(`${base}/events`, { 'last-event-id': first })
  await until(() => app.sse.stats().topics.a === 1)
  await app.sse.publish('a', '<p>3</p>')
  await client.waitFor(2)
  await sleep(20)
  t.same(
    client.events.map((e) => e.data),
    ['<p>2</p>', '<p>3</p>']
  )
})

test('a client that leaves during a slow replay is cleaned up', async (t) => {
  const broker = wrapped(async (inner, topics, lastId) => {
    await sleep(100)
    return inner.replay(topics, lastId)
  })
  const { app } = await makeApp({ broker })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['a'] })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const first = await app.sse.publish('a', '<p>1</p>')
  const client = await connect(`${base}/events`, { 'last-event-id': first })
  await until(() => app.sse.stats().connections === 1)
  client.close()
  await until(() => app.sse.stats().connections === 0)
  await sleep(150)
  t.same(app.sse.stats().topics, {})
})
