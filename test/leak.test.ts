import { connect as netConnect } from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { test } from 'tap'
import { makeApp } from './helpers/app.js'
import { listen, until } from './helpers/sse.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** Full collections, each in its own turn: a WeakRef read in a turn keeps its target alive to the end of it. */
async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve))
    gc()
  }
}

/** Opens the stream, waits for the response head, then drops the connection. */
function cycle(port: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n`)
    })
    socket.once('data', (chunk) => {
      if (!chunk.toString('latin1').startsWith('HTTP/1.1 200')) reject(new Error(chunk.toString('latin1')))
      socket.destroy()
    })
    socket.once('close', () => resolve())
    socket.once('error', reject)
  })
}

test('10,000 connect/disconnect cycles leave no connection, topic, listener or sink behind', async (t) => {
  const { app } = await makeApp({ heartbeatMs: 1000 }, { logger: false })
  const sinks: WeakRef<object>[] = []
  app.get('/events', (req, reply) => {
    const n = Number((req.query as { n: string }).n)
    const sink = reply.sse({ topics: ['shared', `own:${n % 100}`] })
    void sink.closed
    void sink.signal
    if (n >= 1000) sinks.push(new WeakRef(sink))
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const port = Number(new URL(base).port)
  const listeners = () => app.server.eventNames().map((name) => app.server.listenerCount(name))

  const run = async (from: number, cycles: number) => {
    const concurrency = 50
    let next = from
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < from + cycles) await cycle(port, `/events?n=${next++}`)
      })
    )
    await until(() => app.sse.stats().connections === 0, 5000, 'all streams to close')
  }

  await run(0, 1000) // warm up
  await collect()
  const before = { heap: process.memoryUsage().heapUsed, listeners: listeners() }
  await run(1000, 10_000)
  const stats = app.sse.stats()
  t.equal(stats.connections, 0)
  t.same(stats.topics, {})
  t.same(listeners(), before.listeners, 'no growth in server listeners')
  t.equal(sinks.length, 10_000)
  await collect()
  // Whether each sink can be collected is exact, where a heap total moves with the
  // allocator: a sink that anything still held (a topic, a timer, a listener) stays.
  t.equal(sinks.filter((ref) => ref.deref() !== undefined).length, 0, 'every closed sink was garbage-collected')
  const grown = (process.memoryUsage().heapUsed - before.heap) / 1024 / 1024
  t.comment(`heap after 10,000 cycles: ${grown >= 0 ? '+' : ''}${grown.toFixed(2)} MB (a figure, not a test)`)
})
