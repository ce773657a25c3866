/**
 * `npm start`: the example on http://127.0.0.1:3000 (PORT, HOST).
 */
import { buildApp } from './app.js'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'

const app = await buildApp({ logger: true })
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
