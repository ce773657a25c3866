/**
 * The one SSE test client, and the one `until`: `connect` is the package's own
 * `openEvents` over a raw HTTP/1.1 connection (`agent: false`, so closing it
 * closes the socket) whose bytes go through `eventsource-parser`, so every
 * assertion sees what a browser would dispatch.
 */
import { type IncomingMessage, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import type { FastifyInstance } from 'fastify'
import { openEvents, type SseClient } from '../../lib/testing.js'

/** Parses a whole SSE text and returns the events a conforming client dispatches. */
export function parseAll(text: string | string[]): EventSourceMessage[] {
  const events: EventSourceMessage[] = []
  const parser = createParser({ onEvent: (event) => events.push(event) })
  for (const chunk of Array.isArray(text) ? text : [text]) parser.feed(chunk)
  return events
}

/** Listens on a free loopback port and returns the base URL. */
export async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  return `http://127.0.0.1:${port}`
}

/** One open SSE connection: the public client, with its body typed as the `IncomingMessage` it is over a URL. */
export interface Client extends SseClient {
  res: IncomingMessage
}

/**
 * Opens `url` as an SSE client (`openEvents` from `fastify-html-sse/testing`,
 * over its own loopback connection) and parses what arrives; resolves once the
 * response head is in. With `bytesPerSecond` it reads at that pace (checked
 * every 10 ms), as a slow but steady client would.
 */
export async function connect(
  url: string,
  headers: Record<string, string> = {},
  { bytesPerSecond }: { bytesPerSecond?: number } = {}
): Promise<Client> {
  const client = await openEvents(new URL(url).origin, url, { headers, bytesPerSecond })
  return Object.assign(client, { res: client.body as IncomingMessage })
}

/**
 * Waits until `check()` is true, polling every few ms. The timeout only turns a
 * hang into a failure that names `what` was awaited; nothing is measured.
 */
export async function until(check: () => boolean | Promise<boolean>, ms = 5000, what = 'condition'): Promise<void> {
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
  }, ms)
  try {
    while (!(await check())) {
      if (timedOut) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 5))
    }
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Resolves with `promise`, or rejects naming `what` if it has not settled
 * after `ms`: a generous bound that turns a hang into a failure.
 */
export async function settles<T>(promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, fail) => {
        timer = setTimeout(() => fail(new Error(`${what} did not settle within ${ms} ms`)), ms)
      })
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** Resolves once `promise` has settled, or reports `false` after one turn of the event loop. */
export async function isSettled(promise: Promise<unknown>): Promise<boolean> {
  let settled = false
  promise.then(
    () => {
      settled = true
    },
    () => {
      settled = true
    }
  )
  await new Promise((r) => setImmediate(r))
  return settled
}

/** What a plain request got back. */
export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
  /** Resolves when the server closed the connection. */
  socketClosed: Promise<void>
}

/** A plain request (GET unless told) that reads the whole answer and notes when the server closes the socket. */
export function answerOf(
  url: string,
  { method = 'GET', headers = {} }: { method?: string; headers?: Record<string, string> } = {}
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, headers }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      const socketClosed = new Promise<void>((r) => res.socket.once('close', () => r()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, socketClosed }))
    })
    req.on('error', reject)
    req.end()
  })
}

/** A promise and the function that resolves it: a test lets something go when it chooses. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => {
    resolve = r
  })
  return { promise, resolve }
}
