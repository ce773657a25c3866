import { Agent, type IncomingMessage, request, type ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import type { SseSink } from '../lib/index.js'
import { errorsIn, makeApp } from './helpers/app.js'
import { connect, deferred, listen, settles, until } from './helpers/sse.js'

test('app.close() ends every stream promptly, also one whose client stopped reading', async (t) => {
  const { app, logs } = await makeApp({ heartbeatMs: 10, maxBufferedBytes: 256 * 1024 * 1024 })
  let generatorDone = false
  const sinks: SseSink[] = []
  app.get('/idle', (_req, reply) => {
    sinks.push(reply.sse({ topics: ['news'] }))
  })
  app.get('/ticks', (_req, reply) => {
    sinks.push(
      reply.sse(
        (async function* () {
          try {
            for (let i = 0; ; i++) {
              yield `<p>${i}</p>`
              await sleep(20)
            }
          } finally {
            generatorDone = true
          }
        })()
      )
    )
  })
  let floodRes: ServerResponse | undefined
  app.get('/flood', (_req, reply) => {
    floodRes = reply.raw
    const sink = reply.sse()
    sinks.push(sink)
    const big = `<pre>${'z'.repeat(1024 * 1024)}</pre>`
    void (async () => {
      while (await sink.send(big)) {}
    })()
  })
  const base = await listen(app)
  const idle = await connect(`${base}/idle`)
  const ticks = await connect(`${base}/ticks`)
  const flood = await connect(`${base}/flood`)
  flood.res.pause()
  await ticks.waitFor(2)
  await until(() => floodRes?.writableNeedDrain === true, 5000, 'the flood socket to fill')
  t.equal(app.sse.stats().connections, 3)

  // Without the plugin, Node would hold the unread stream open for minutes; 10 s only turns that hang into a failure.
  await settles(app.close(), 'app.close()', 10_000)
  t.equal(app.sse.stats().connections, 0)
  for (const sink of sinks) t.equal(sink.signal.aborted, true)
  await until(() => generatorDone, 2000, 'the generator to finish')
  await idle.ended
  await ticks.ended
  t.equal(idle.res.complete, true, 'an idle stream ends normally')
  t.same(errorsIn(logs), [])
})

test('HTTP/1 with keep-alive clients (as browsers are): close() leaves no idle socket, drained or late', async (t) => {
  const { app, logs } = await makeApp({ drainMs: 500 })
  const release = deferred()
  const entered = deferred()
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['t'] })
  })
  app.get('/late', async (_req, reply) => {
    entered.resolve()
    await release.promise
    reply.sse({ topics: ['t'] })
  })
  const closing = deferred()
  app.addHook('preClose', (done) => {
    closing.resolve()
    done()
  })
  const base = await listen(app)
  // One agent that keeps its sockets for reuse, like a browser's pool.
  const agent = new Agent({ keepAlive: true, keepAliveMsecs: 60_000 })
  t.teardown(() => agent.destroy())
  const open = (path: string) =>
    new Promise<{ head: IncomingMessage; body: Promise<string> }>((resolve, reject) => {
      const req = request(`${base}${path}`, { agent, headers: { accept: 'text/event-stream' } }, (head) => {
        let body = ''
        head.setEncoding('utf8')
        head.on('data', (chunk: string) => {
          body += chunk
        })
        resolve({ head, body: new Promise((r) => head.on('end', () => r(body))) })
      })
      req.on('error', reject)
      req.end()
    })
  const drained = await open('/events')
  await until(() => app.sse.stats().connections === 1)
  const late = open('/late')
  await entered.promise
  const closed = app.close()
  await closing.promise
  release.resolve()
  const lateAnswer = await late
  t.equal(lateAnswer.head.headers.connection, 'close', 'the late stream says its connection closes')
  t.match(await lateAnswer.body, /^event: retry\nretry: \d+\n\n$/)
  t.match(await drained.body, /^event: retry\nretry: \d+\n\n$/)
  // Fastify's keep-alive timeout is 72 s: an idle socket would hold close() that long.
  await settles(closed, 'app.close() with keep-alive clients', 20_000)
  t.same(errorsIn(logs), [])
})
