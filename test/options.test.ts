import Fastify from 'fastify'
import { test } from 'tap'
import htmlSse, { type HtmlSseOptions, memoryBroker } from '../lib/index.js'

test('bad plugin options fail registration with a clear, coded error', async (t) => {
  const bad: Array<[HtmlSseOptions, RegExp]> = [
    [{ heartbeatMs: -1 }, /heartbeatMs/],
    [{ heartbeatMs: 1.5 }, /heartbeatMs/],
    [{ heartbeatMs: 2 ** 31 }, /heartbeatMs/],
    [{ retryMs: -5 }, /retryMs/],
    [{ maxBufferedBytes: 0 }, /maxBufferedBytes/],
    [{ maxBufferedBytes: '1mb' as unknown as number }, /maxBufferedBytes/],
    [{ replay: -1 }, /replay/],
    [{ broker: {} as never }, /broker.*publish/],
    [{ assetsPrefix: 'no-slashes' }, /assetsPrefix/]
  ]
  for (const [options, message] of bad) {
    const app = Fastify()
    await t.rejects(
      async () => {
        await app.register(htmlSse, options)
      },
      { code: 'FST_ERR_HTML_SSE_OPTION_INVALID', message },
      JSON.stringify(options)
    )
    await app.close()
  }
  t.throws(() => memoryBroker({ replay: 1.5 }), { code: 'FST_ERR_HTML_SSE_OPTION_INVALID' })
})

test('the plugin declares its name and Fastify range; defaults register', async (t) => {
  const app = Fastify()
  await app.register(htmlSse)
  await app.ready()
  t.ok(app.hasDecorator('sse'))
  t.ok(app.hasReplyDecorator('sse'))
  t.equal((htmlSse as unknown as Record<symbol, { name: string }>)[Symbol.for('plugin-meta')]?.name, 'fastify-html-sse')
  await app.close()
  await t.rejects(app.sse.publish('t', 'x'), { code: 'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE' }, 'publishing after close')
})
