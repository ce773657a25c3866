/**
 * Helpers for your own tests: `fastify-html-sse/testing`.
 */
import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import { type AddressInfo, createServer, type Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { Server as TlsServer } from 'node:tls'
import { createParser } from 'eventsource-parser'
import type { FastifyInstance, RawServerBase } from 'fastify'
import {
  FST_ERR_HTML_SSE_COLLECT_RESPONSE,
  FST_ERR_HTML_SSE_COLLECT_TIMEOUT,
  FST_ERR_HTML_SSE_OPTION_INVALID
} from './errors.js'

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
  timeoutMs?: number | undefined
  /** Request headers, e.g. `{ 'last-event-id': '…' }`. */
  headers?: Record<string, string> | undefined
  /**
   * `'inject'` streams the response through `app.inject()`: no port, and it
   * works for HTTP/1.1, HTTP/2 and HTTPS apps alike. `'socket'` opens a real
   * loopback HTTP/1.1 connection to the app's server (whether or not it
   * listens), for a test about what the wire carries; plain HTTP/1.1 apps only.
   * @default 'inject'
   */
  transport?: 'inject' | 'socket' | undefined
}

/**
 * The part of a Fastify app `collectEvents` uses, so that HTTP/1.1, HTTPS and
 * HTTP/2 apps (whose `FastifyInstance` types differ by server) all fit.
 */
export interface TestableApp {
  ready(): PromiseLike<unknown>
  inject: FastifyInstance['inject']
  server: RawServerBase
  initialConfig: { readonly http2?: boolean }
}

/** What a transport hands back: the head, the body as a stream, and a way to hang up. */
interface Opened {
  status: number
  type: string
  body: Readable
  /** Resolves once the server side has seen the client go. */
  hangUp(): Promise<void>
}

/**
 * Requests `url` from `app` as an SSE client would, resolves to the first
 * `count` events, then disconnects, as a browser tab that closes. Nothing is
 * left open: an `app.close()` right after is prompt. Rejects with a coded
 * error on timeout, when the stream ends early, or when the response is not an
 * event stream.
 *
 * @example
 * ```ts
 * const [first] = await collectEvents(app, '/events', { count: 1 })
 * t.equal(first.data, <Button>Update #1</Button>)
 * ```
 */
export async function collectEvents(
  app: TestableApp,
  url: string,
  options: CollectEventsOptions
): Promise<CollectedEvent[]> {
  const { count, timeoutMs = 5000, headers = {}, transport = 'inject' } = options
  if (transport !== 'inject' && transport !== 'socket') {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('transport', `must be 'inject' or 'socket', got ${String(transport)}`)
  }
  await app.ready()
  const events: CollectedEvent[] = []
  const ac = new AbortController()
  let opened: Opened | undefined
  let finished = false
  let timer: NodeJS.Timeout | undefined
  try {
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => {
        // A socket that got no head is closed now, as a client giving up; a head that comes later is hung up then.
        if (opened === undefined) ac.abort()
        reject(new FST_ERR_HTML_SSE_COLLECT_TIMEOUT(events.length, count, url, timeoutMs))
      }, timeoutMs)
      const requestHeaders = { accept: 'text/event-stream', ...headers }
      const opening =
        transport === 'inject'
          ? openInjected(app, url, requestHeaders)
          : openSocket(app, url, requestHeaders, ac.signal)
      opening.then((head) => {
        // A head that comes after the timeout is hung up at once.
        if (finished) {
          void head.hangUp()
          return
        }
        opened = head
        if (head.status !== 200 || !head.type.startsWith('text/event-stream')) {
          reject(new FST_ERR_HTML_SSE_COLLECT_RESPONSE(url, head.status, head.type || 'none'))
          return
        }
        const parser = createParser({
          onEvent(event) {
            if (events.length >= count) return
            events.push({ event: event.event ?? 'message', data: event.data, id: event.id })
            if (events.length === count) resolve()
          }
        })
        head.body.setEncoding('utf8')
        head.body.on('data', (chunk: string) => parser.feed(chunk))
        head.body.on('error', () => {})
        head.body.on('end', () => reject(new FST_ERR_HTML_SSE_COLLECT_TIMEOUT(events.length, count, url, timeoutMs)))
      }, reject)
    })
  } finally {
    finished = true
    clearTimeout(timer)
    await opened?.hangUp()
  }
  return events
}

async function openInjected(app: TestableApp, url: string, headers: Record<string, string>): Promise<Opened> {
  // Resolves once the plugin writes the head; the body streams as it is written. No abort
  // signal: Fastify would log an injected request aborted before its head as an error.
  const res = await app.inject({ method: 'GET', url, headers, payloadAsStream: true })
  const body = res.stream()
  return {
    status: res.statusCode,
    type: String(res.headers['content-type'] ?? ''),
    body,
    // Destroying the response is what a client leaving does to a real one: 'close' fires.
    hangUp: async () => {
      body.destroy()
      const raw = res.raw.res
      if (!raw.destroyed) {
        const closed = once(raw, 'close')
        raw.destroy()
        await closed
      }
    }
  }
}

async function openSocket(
  app: TestableApp,
  url: string,
  headers: Record<string, string>,
  signal: AbortSignal
): Promise<Opened> {
  if (app.initialConfig.http2 === true || app.server instanceof TlsServer) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('transport', "'socket' needs a plain HTTP/1.1 app: use 'inject'")
  }
  const sockets = new Set<Socket>()
  // Connections to this port are handed to the app's own HTTP server.
  const bridge = createServer((socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    app.server.emit('connection', socket)
  })
  await new Promise<void>((resolve) => bridge.listen(0, '127.0.0.1', resolve))
  const { port } = bridge.address() as AddressInfo
  const hangUp = async () => {
    const closed = new Promise((resolve) => bridge.close(resolve))
    for (const socket of sockets) socket.destroy()
    await closed
    // The app's response hears its socket close on the next turn.
    await new Promise((resolve) => setImmediate(resolve))
  }
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: url, agent: false, headers, signal }, (res) =>
      resolve({
        status: res.statusCode as number,
        type: String(res.headers['content-type'] ?? ''),
        body: res,
        hangUp: () => {
          res.destroy()
          return hangUp()
        }
      })
    )
    req.on('error', (err) => {
      void hangUp()
      reject(err)
    })
    req.end()
  })
}
