/**
 * Real SSE clients for tests: a raw HTTP/1.1 connection whose bytes go through
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
  /** Resolves when at least `n` events have arrived (rejects after `ms`). */
  waitFor(n: number, ms?: number): Promise<EventSourceMessage[]>
  /** Resolves when the server ends the response. */
  ended: Promise<void>
  close(): void
}

/** Opens `url` as an SSE client and parses what arrives. */
export function connect(url: string, headers: Record<string, string> = {}): Promise<Client> {
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
            const timer = setTimeout(() => fail(new Error(`saw ${events.length} of ${n} events in ${ms}ms`)), ms)
            const check = () => {
              if (events.length >= n) {
                clearTimeout(timer)
                ok(events)
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
      res.on('data', (chunk: string) => {
        client.raw += chunk
        parser.feed(chunk)
      })
      res.on('end', () => ended())
      res.on('close', () => ended())
      resolve(client)
    })
    req.on('error', reject)
    req.end()
  })
}

/** Waits until `check()` is true, polling every few ms (rejects after `ms`). */
export async function until(check: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const start = Date.now()
  while (!check()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}
