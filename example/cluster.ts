/**
 * `npm run start:cluster`: the example as two instances on two ports (PORT and
 * PORT + 1) sharing topics through Redis (REDIS_URL). A note posted on one
 * updates the tabs of both; a browser may reconnect to either.
 */
import { redisBroker } from 'fastify-html-sse/redis'
import { buildApp } from './app.js'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const prefix = process.env.REDIS_PREFIX ?? 'fastify-html-sse:example:'

const instances = await Promise.all(
  [0, 1].map(async (n) => {
    const app = await buildApp({
      logger: { base: { instance: n === 0 ? 'A' : 'B' } },
      broker: redisBroker({ url, prefix }),
      jobIdBase: n * 1000
    })
    const address = await app.listen({ port: port + n, host })
    app.log.info(`instance ${n === 0 ? 'A' : 'B'}: open ${address}/ (htmx 2) or ${address}/?htmx=4`)
    return app
  })
)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    Promise.all(instances.map((app) => app.close())).then(
      () => instances[0]?.log.info('closed'),
      (err: unknown) => {
        instances[0]?.log.error({ err }, 'close failed')
        process.exitCode = 1
      }
    )
  })
}
