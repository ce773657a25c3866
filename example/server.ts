/**
 * `npm start`: the example on http://127.0.0.1:3000 (PORT, HOST), with the
 * in-memory broker, or through Redis when REDIS_URL is set.
 */
import { buildApp } from './app.js'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'

const redisUrl = process.env.REDIS_URL
// Loaded only when asked for: an app that never imports the redis entry never needs the client.
const broker =
  redisUrl === undefined
    ? undefined
    : (await import('fastify-html-sse/redis')).redisBroker({ url: redisUrl, prefix: 'fastify-html-sse:example:' })
const app = await buildApp({ logger: true, broker })
// A broker you make is yours to close, after the app (the plugin closes only the default one it made).
if (broker !== undefined) app.addHook('onClose', () => broker.close())
const url = await app.listen({ port, host })
app.log.info(`open ${url}/ for htmx 2, ${url}/?htmx=4 for htmx 4`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    app.log.info({ signal }, 'closing')
    app.close().then(
      () => app.log.info('closed'),
      (err: unknown) => {
        app.log.error({ err }, 'close failed')
        process.exitCode = 1
      }
    )
  })
}
