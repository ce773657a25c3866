import type { ServerResponse } from 'node:http'
import { connect as netConnect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import type { SseSink } from '../lib/index.js'
import { errorsIn, makeApp } from './helpers/app.js'
import { connect, isSettled, listen, settles, until } from './helpers/sse.js'

test('a client leaving calls the source return(): a generator blocked on a full socket finishes at once', async (t) => {
  const { app, logs } = await makeApp({ maxBufferedBytes: 64 * 1024 * 1024 })
  let pulled = 0
  let finallyRan = false
  let sink!: SseSink
  let res!: ServerResponse
  const big = `<pre>${'x'.repeat(256 * 1024)}</pre>`
  app.get('/events', (_req, reply) => {
    res = reply.raw
    sink = reply.sse(
      (function* () {
        try {
          for (;;) {
            pulled++
            yield big
          }
        } finally {
          finallyRan = true
        }
      })()
    )
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  // A client that never reads: its socket buffers up to its high-water mark, then stops reading.
  const client = netConnect(Number(new URL(base).port), '127.0.0.1', () => {
    client.write('GET /events HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n')
  })
  client.on('error', () => {})
  await until(
    () => res?.writableNeedDrain === true && client.readableLength >= client.readableHighWaterMark,
    5000,
    'the server socket to fill while the client reads nothing'
  )
  // Nothing can drain now, so a send queues behind the generator's pending item.
  const probe = sink.send('<p>probe</p>')
  t.equal(await isSettled(probe), false, 'a send waits behind the full socket')
  t.equal(finallyRan, false, 'the generator is still running')
  const pulledBeforeLeaving = pulled
  client.destroy()
  await settles(sink.closed, 'the sink to close')
  t.equal(finallyRan, true, 'its finally ran by the time the sink closed')
  t.equal(pulled, pulledBeforeLeaving, 'nothing was pulled after the client left')
  t.equal(await probe, false, 'the waiting send settles false: it was never written')
  t.equal(sink.signal.aborted, true)
  t.equal(app.sse.stats().dropped, 0, 'the generator waited on the socket: maxBufferedBytes was never reached')
  t.same(errorsIn(logs), [], 'a client leaving is not an error')
  await until(() => app.sse.stats().connections === 0)
})

test('a generator waiting with sink.signal stops at once, and its abort is not logged as an error', async (t) => {
  const { app, logs } = await makeApp()
  let stopped = false
  app.get('/events', (_req, reply) => {
    let sink!: SseSink
    sink = reply.sse(
      (async function* () {
        try {
          for (let i = 0; ; i++) {
            yield `<p>${i}</p>`
            await sleep(10_000, undefined, { signal: sink.signal })
          }
        } finally {
          stopped = true
        }
      })()
    )
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.waitFor(1)
  client.close()
  await until(() => stopped, 1000, 'the generator to stop')
  t.same(errorsIn(logs), [])
  await until(() => app.sse.stats().connections === 0)
})

test('send() waits while the socket is full, resumes on drain, and settles false when the client leaves', async (t) => {
  const { app } = await makeApp({ maxBufferedBytes: 256 * 1024 * 1024 })
  let sink!: SseSink
  app.get('/events', (_req, reply) => {
    sink = reply.sse()
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  client.res.pause()
  await until(() => sink !== undefined)
  const chunk = `<pre>${'y'.repeat(512 * 1024)}</pre>`
  // Fill the socket until a send has to wait.
  let waiting: Promise<boolean> | null = null
  for (let i = 0; i < 200 && waiting === null; i++) {
    const sent = sink.send(chunk)
    // A send settles at once unless it is queued behind a full socket.
    if (await isSettled(sent)) t.equal(await sent, true)
    else waiting = sent
  }
  t.ok(waiting, 'a send waits once the socket is over its high-water mark')
  const queued = sink.send('<p>queued behind</p>')
  client.res.resume()
  t.equal(await waiting, true, 'resolves true when the socket drains')
  t.equal(await queued, true, 'the next one follows in order')
  await client.waitFor(1)

  client.res.pause()
  let second: Promise<boolean> | null = null
  for (let i = 0; i < 200 && second === null; i++) {
    const sent = sink.send(chunk)
    if (!(await isSettled(sent))) second = sent
  }
  t.ok(second, 'waiting again')
  client.close()
  t.equal(await second, false, 'a client that leaves while a send waits makes it resolve false')
  t.equal(await sink.send('after'), false)
})

test('sink.close() ends the response normally; the client sees the end', async (t) => {
  const { app } = await makeApp()
  app.get('/events', async (_req, reply) => {
    const sink = reply.sse()
    await sink.send('<p>bye</p>')
    sink.close()
    sink.close()
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.ended
  t.equal(client.res.complete, true, 'the response completed')
  t.same(
    client.events.map((e) => e.data),
    ['<p>bye</p>']
  )
})

test('a published frame waits behind a send that waits: order is kept', async (t) => {
  const { app } = await makeApp({ maxBufferedBytes: 256 * 1024 * 1024 })
  let sink!: SseSink
  app.get('/events', (_req, reply) => {
    sink = reply.sse({ topics: ['t'] })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  client.res.pause()
  await until(() => app.sse.stats().topics.t === 1)
  const chunk = `<pre>${'o'.repeat(512 * 1024)}</pre>`
  let waiting: Promise<boolean> | null = null
  let sent = 0
  for (let i = 0; i < 200 && waiting === null; i++) {
    const pending = sink.send(chunk)
    sent++
    if (!(await isSettled(pending))) waiting = pending
  }
  await app.sse.publish('t', '<p>published last</p>')
  client.res.resume()
  t.equal(await waiting, true)
  await client.waitFor(sent + 1)
  t.equal(client.events.at(-1)?.data, '<p>published last</p>', 'the published frame comes after the waiting send')
  t.equal(client.events.length, sent + 1)
})

test('a source whose return() throws or rejects is logged, and the stream still ends', async (t) => {
  const { app, logs } = await makeApp()
  const sinks: SseSink[] = []
  app.get('/sync', (_req, reply) => {
    sinks.push(
      reply.sse(
        (function* () {
          try {
            for (;;) yield '<p>s</p>'
          } finally {
            // biome-ignore lint/correctness/noUnsafeFinally: the point of this test
            throw new Error('sync finally failed')
          }
        })()
      )
    )
  })
  app.get('/async', (_req, reply) => {
    const iterator: AsyncIterator<string> = {
      next: () => new Promise((resolve) => setTimeout(() => resolve({ value: '<p>a</p>', done: false }), 5)),
      return: () => Promise.reject(new Error('async return failed'))
    }
    sinks.push(reply.sse({ [Symbol.asyncIterator]: () => iterator }))
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const paused = await connect(`${base}/sync`)
  // Once an event arrived the generator has started: return() now runs its finally.
  await paused.waitFor(1)
  paused.res.pause()
  const slow = await connect(`${base}/async`)
  await slow.waitFor(1)
  paused.close()
  slow.close()
  await until(() => app.sse.stats().connections === 0)
  await until(() => logs.filter((l) => /while closing/.test(l.msg)).length === 2, 2000, 'both logged')
  t.match(
    logs
      .filter((l) => /while closing/.test(l.msg))
      .map((l) => l.err?.message)
      .sort(),
    ['async return failed', 'sync finally failed']
  )
})

test('send() awaits an async component', async (t) => {
  const { app } = await makeApp()
  async function Later() {
    await sleep(1)
    return '<b>later</b>'
  }
  app.get('/events', async (_req, reply) => {
    const sink = reply.sse()
    const closed = sink.closed
    t.equal(await sink.send(Later(), 'later'), true)
    sink.close()
    await closed
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  const client = await connect(`${base}/events`)
  await client.ended
  t.same(
    client.events.map((e) => [e.event, e.data]),
    [['later', '<b>later</b>']]
  )
})
