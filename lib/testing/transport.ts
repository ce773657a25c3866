/**
 * How the test client reaches an app: through `app.inject()`, over a loopback
 * socket bridged to the app's server, or over a socket to a listening URL. Each
 * hands back the head, the body as a stream and a way to hang up.
 */
import { once } from 'node:events'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { type AddressInfo, createServer, type Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { Server as TlsServer } from 'node:tls'
import type { FastifyInstance, RawServerBase } from 'fastify'
import { FST_ERR_HTML_SSE_OPTION_INVALID } from '../errors.js'

/**
 * The part of a Fastify app the test client uses, so that HTTP/1.1, HTTPS and
 * HTTP/2 apps (whose `FastifyInstance` types differ by server) all fit.
 */
export interface TestableApp {
  ready(): PromiseLike<unknown>
  inject: FastifyInstance['inject']
  server: RawServerBase
  initialConfig: { readonly http2?: boolean }
}

/** What a transport hands back: the head, the body as a stream, and a way to hang up. */
export interface Opened {
  status: number
  headers: IncomingHttpHeaders
  body: Readable
  /** Resolves once the server side has seen the client go (or, for a URL, the socket is closed). */
  hangUp(): Promise<void>
}

/** `opening`, or the signal's reason as soon as it aborts; a head that comes after that is hung up. */
export function abortable(opening: Promise<Opened>, signal: AbortSignal | undefined): Promise<Opened> {
  if (signal === undefined) return opening
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    opening.then(
      (head) => {
        signal.removeEventListener('abort', onAbort)
        if (signal.aborted) void head.hangUp()
        else resolve(head)
      },
      (err) => {
        signal.removeEventListener('abort', onAbort)
        reject(signal.aborted ? signal.reason : err)
      }
    )
  })
}

export async function openInjected(app: TestableApp, url: string, headers: Record<string, string>): Promise<Opened> {
  // Resolves once the plugin writes the head; the body streams as it is written. No abort
  // signal: Fastify would log an injected request aborted before its head as an error.
  const res = await app.inject({ method: 'GET', url, headers, payloadAsStream: true })
  const body = res.stream()
  return {
    status: res.statusCode,
    // light-my-request makes every value a string (or an array of strings), as on the wire.
    headers: res.headers as IncomingHttpHeaders,
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

export async function openSocket(
  app: TestableApp,
  url: string,
  headers: Record<string, string>,
  signal: AbortSignal | undefined
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
  return openRequest(new URL(url, `http://127.0.0.1:${port}`), headers, signal, async () => {
    const closed = new Promise((resolve) => bridge.close(resolve))
    for (const socket of sockets) socket.destroy()
    await closed
    // The app's response hears its socket close on the next turn.
    await new Promise((resolve) => setImmediate(resolve))
  })
}

/** A GET over its own connection (`agent: false`, so hanging up closes the socket); `release` runs after. */
export function openRequest(
  url: URL,
  headers: Record<string, string>,
  signal: AbortSignal | undefined,
  release: () => Promise<void>
): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false, headers, signal }, (res) => {
      const { socket } = res
      const socketClosed = new Promise<void>((closed) => socket.once('close', () => closed()))
      resolve({
        status: res.statusCode as number,
        headers: res.headers,
        body: res,
        hangUp: async () => {
          req.destroy()
          socket.destroy()
          await socketClosed
          await release()
        }
      })
    })
    req.on('error', (err) => {
      void release()
      reject(err)
    })
    req.end()
  })
}
