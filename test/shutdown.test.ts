import type { ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import type { SseSink } from '../lib/index.js'
import { errorsIn, makeApp } from './helpers/app.js'
import { connect, listen, settles, until } from './helpers/sse.js'

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
