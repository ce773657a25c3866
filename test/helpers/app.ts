import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Test } from 'tap'
import htmlSse, { type HtmlSseOptions } from '../../lib/index.js'
import { listen } from './sse.js'

/** A log record as pino writes it. */
export interface LogLine {
  level: number
  msg: string
  err?: { message: string; code?: string }
  [key: string]: unknown
}

/** A Fastify app with the plugin registered and every log line captured. */
export async function makeApp(
  options: HtmlSseOptions = {},
  server: FastifyServerOptions & { http2?: boolean } = {}
): Promise<{ app: FastifyInstance; logs: LogLine[] }> {
  const logs: LogLine[] = []
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line))
      callback()
    }
  })
  const logger = server.logger === false ? false : { level: 'debug', stream }
  const app = Fastify({ ...server, logger } as FastifyServerOptions)
  await app.register(htmlSse, { heartbeatMs: 0, ...options })
  return { app, logs }
}

/** Log lines at error level or above. */
export const errorsIn = (logs: LogLine[]) => logs.filter((l) => l.level >= 50)

/**
 * `makeApp` with `GET /events` streaming `topics` (resuming after a
 * `Last-Event-ID`), listening on 127.0.0.1; closed at teardown.
 */
export async function topicsApp(
  t: Test,
  topics: readonly string[],
  options: HtmlSseOptions = {}
): Promise<{ app: FastifyInstance; logs: LogLine[]; base: string }> {
  const { app, logs } = await makeApp(options)
  app.get('/events', (_req, reply) => {
    reply.sse({ topics })
  })
  const base = await listen(app)
  t.teardown(() => app.close())
  return { app, logs, base }
}
