import Fastify from 'fastify'
import t, { type Test } from 'tap'
import { memoryBroker } from '../lib/broker/memory.js'
import htmlSse from '../lib/index.js'
import { brokerContract } from './helpers/broker-contract.js'
import { connect, listen, until } from './helpers/sse.js'

brokerContract(t, 'memoryBroker', async ({ replay }) => memoryBroker(replay === undefined ? {} : { replay }), {
  shared: false
})

async function appWithDefaults(t: Test) {
  const app = Fastify()
  await app.register(htmlSse, { heartbeatMs: 0 })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['m'] })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  return { app, base }
}

t.test('a resume of 999 events of 1.2 KB reaches a reading client (default maxBufferedBytes)', async (t) => {
  const { app, base } = await appWithDefaults(t)
  const html = (i: number) => `<p>${String(i).padStart(4, '0')}${'r'.repeat(1200)}</p>`
  const anchor = await app.sse.publish('m', '<p>anchor</p>')
  const ids: string[] = []
  for (let i = 0; i < 999; i++) ids.push(await app.sse.publish('m', html(i)))
  const client = await connect(`${base}/events`, { 'last-event-id': anchor })
  await client.waitFor(999, 20_000)
  t.ok(
    client.events.every((e, i) => e.id === ids[i] && e.data === html(i)),
    'all 999, once, in order, intact'
  )
  t.equal(app.sse.stats().dropped, 0, 'not dropped')
  client.close()
  await until(() => app.sse.stats().connections === 0, 3000, 'the stream to close')
})

t.test('a single 2 MiB event reaches a reading client (default maxBufferedBytes)', async (t) => {
  const { app, base } = await appWithDefaults(t)
  const client = await connect(`${base}/events`)
  await until(() => app.sse.stats().connections === 1, 3000, 'the stream to open')
  const big = `<p>${'b'.repeat(2 * 1024 * 1024)}</p>`
  const id = await app.sse.publish('m', big)
  const after = await app.sse.publish('m', '<p>after</p>')
  await client.waitFor(2, 20_000)
  t.same(
    client.events.map((e) => [e.id, e.data.length]),
    [
      [id, big.length],
      [after, '<p>after</p>'.length]
    ],
    'the big event arrived whole, then the next one'
  )
  t.equal(app.sse.stats().dropped, 0, 'not dropped')
  client.close()
  await until(() => app.sse.stats().connections === 0, 3000, 'the stream to close')
})
