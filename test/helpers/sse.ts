/**
 * The one SSE test client, and the one `until`: a raw HTTP/1.1 connection
 * (`agent: false`, so closing it closes the socket) whose bytes go through
 * `eventsource-parser`, so every assertion sees what a browser would dispatch.
 */
import { type IncomingMessage, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import type { FastifyInstance } from 'fastify'

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

/** One open SSE connection. */
export interface Client {
  res: IncomingMessage
  events: EventSourceMessage[]
  comments: string[]
  raw: string
  /** Resolves when at least `n` events have arrived; rejects if the stream ends first, or after `ms`. */
  waitFor(n: number, ms?: number): Promise<EventSourceMessage[]>
  /** Resolves when the server ends the response. */
  ended: Promise<void>
  close(): void
}

/**
 * Opens `url` as an SSE client and parses what arrives; resolves once the
 * response head is in. With `bytesPerSecond` it reads at that pace (in 20 ms
 * steps), as a slow but steady client would.
 */
export function connect(
  url: string,
  headers: Record<string, string> = {},
  { bytesPerSecond }: { bytesPerSecond?: number } = {}
): Promise<Client> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      const events: EventSourceMessage[] = []
      const comments: string[] = []
      const waiters: Array<() => void> = []
      const parser = createParser({
        onEvent: (event) => {
          events.push(event)
          for (const w of waiters.splice(0)) w()
        },
        onComment: (comment) => comments.push(comment)
      })
      let ended!: () => void
      let done = false
      const client: Client = {
        res,
        events,
        comments,
        raw: '',
        ended: new Promise<void>((r) => {
          ended = r
        }),
        waitFor(n, ms = 5000) {
          return new Promise((ok, fail) => {
            const timer = setTimeout(
              () => fail(new Error(`${url}: saw ${events.length} of ${n} events in ${ms} ms`)),
              ms
            )
            const check = () => {
              if (events.length >= n) {
                clearTimeout(timer)
                ok(events)
              } else if (done) {
                clearTimeout(timer)
                fail(new Error(`${url}: the stream ended after ${events.length} of ${n} events`))
              } else waiters.push(check)
            }
            check()
          })
        },
        close() {
          req.destroy()
        }
      }
      res.setEncoding('utf8')
      const take = (chunk: string) => {
        client.raw += chunk
        parser.feed(chunk)
      }
      let pacer: NodeJS.Timeout | null = null
      if (bytesPerSecond === undefined) res.on('data', take)
      else {
        // Reads what the pace allows since the start, so a late timer catches up instead of slowing the pace.
        const began = performance.now()
        let read = 0
        pacer = setInterval(() => {
          const allowed = Math.floor(((performance.now() - began) / 1000) * bytesPerSecond) - read
          if (allowed <= 0 || res.readableLength === 0) {
            res.read(0)
            return
          }
          // A string of at most `allowed` characters; an event stream of ASCII is one byte a character.
          const chunk: string | null = res.read(Math.min(allowed, res.readableLength))
          if (chunk === null) return
          read += chunk.length
          take(chunk)
        }, 10)
        res.on('readable', () => {})
      }
      const finish = () => {
        if (pacer !== null) clearInterval(pacer)
        done = true
        ended()
        for (const w of waiters.splice(0)) w()
      }
      res.on('end', finish)
      res.on('close', finish)
      res.on('error', () => {})
      resolve(client)
    })
    req.on('error', reject)
    req.end()
  })
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
