/**
 * Helpers for your own tests: `fastify-html-sse/testing`.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { type AddressInfo, createServer, type Socket } from 'node:net'
import { createParser } from 'eventsource-parser'
import type { FastifyInstance } from 'fastify'
import { FST_ERR_HTML_SSE_COLLECT_RESPONSE, FST_ERR_HTML_SSE_COLLECT_TIMEOUT } from './errors.js'

/** One event as a client sees it. */
export interface CollectedEvent {
  /** The event type (`message` when the frame names none). */
  event: string
  /** The data, lines joined with LF. */
  data: string
  /** The frame's own `id:` field, when it has one. */
  id: string | undefined
}

/** Options of `collectEvents`. */
export interface CollectEventsOptions {
  /** How many events to wait for. */
  count: number
  /** Give up after this long. @default 5000 */
  timeoutMs?: number
  /** Request headers, e.g. `{ 'last-event-id': '…' }`. */
  headers?: Record<string, string>
}

/**
 * Opens `url` on `app` as an SSE client would (a real HTTP/1.1 connection
 * through a private loopback port, whether or not the app listens), resolves to
 * the first `count` events, then disconnects. Nothing is left open: an
 * `app.close()` right after is prompt. Rejects with a coded error on timeout,
 * when the stream ends early, or when the response is not an event stream.
 *
 * @example
 * ```ts
 * const [first] = await collectEvents(app, '/events', { count: 1 })
 * t.equal(first.data, <Button>Update #1</Button>)
 * ```
 */
export async function collectEvents(
  app: FastifyInstance,
  url: string,
  options: CollectEventsOptions
): Promise<CollectedEvent[]> {
  const { count, timeoutMs = 5000, headers = {} } = options
  await app.ready()
  const sockets = new Set<Socket>()
  // Connections to this port are handed to the app's own HTTP server.
  const bridge = createServer((socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    app.server.emit('connection', socket)
  })
  await new Promise<void>((resolve) => bridge.listen(0, '127.0.0.1', resolve))
  const { port } = bridge.address() as AddressInfo
  const events: CollectedEvent[] = []
  let response: IncomingMessage | undefined
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new FST_ERR_HTML_SSE_COLLECT_TIMEOUT(events.length, count, url, timeoutMs))
      }, timeoutMs)
      const done = (err?: Error) => {
        clearTimeout(timer)
        if (err === undefined) resolve()
        else reject(err)
      }
      const req = httpRequest(
        { host: '127.0.0.1', port, path: url, agent: false, headers: { accept: 'text/event-stream', ...headers } },
        (res) => {
          response = res
          const type = String(res.headers['content-type'] ?? '')
          if (res.statusCode !== 200 || !type.startsWith('text/event-stream')) {
            done(new FST_ERR_HTML_SSE_COLLECT_RESPONSE(url, res.statusCode ?? 0, type || 'none'))
            return
          }
          const parser = createParser({
            onEvent(event) {
              if (events.length >= count) return
              events.push({ event: event.event ?? 'message', data: event.data, id: event.id })
              if (events.length === count) done()
            }
          })
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => parser.feed(chunk))
          res.on('end', () => done(new FST_ERR_HTML_SSE_COLLECT_TIMEOUT(events.length, count, url, timeoutMs)))
        }
      )
      req.on('error', done)
      req.end()
    })
  } finally {
    response?.destroy()
    for (const socket of sockets) socket.destroy()
    bridge.close()
  }
  return events
}
