/**
 * Headless Chromium for the browser tests: the Debian package, driven by
 * playwright-core. Nothing is ever downloaded.
 */
import { existsSync } from 'node:fs'
import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { type Browser, chromium, type Page } from 'playwright-core'
import type { Test } from 'tap'

export const CHROMIUM_PATH = '/usr/bin/chromium'

const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
  '--disable-quic'
]

/** Launches the system Chromium; throws a clear error when it is not installed. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM_PATH}. Install it with "apt-get update && apt-get install -y chromium" ` +
        '(the browser tests never download a browser).'
    )
  }
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: ARGS })
}

/** What a page did that a test checks at the end. */
export interface PageLog {
  /** Console messages of type error, and uncaught page errors. */
  errors: string[]
  /** Every URL the page requested. */
  requests: string[]
}

/** Records console errors, page errors and requests of `page` into `log`. */
export function watchPage(page: Page, log: PageLog): Page {
  page.on('console', (message) => {
    if (message.type() === 'error') log.errors.push(`console: ${message.text()} (${message.location().url})`)
  })
  page.on('pageerror', (err) => log.errors.push(`pageerror: ${err.message}`))
  page.on('request', (request) => log.requests.push(request.url()))
  return page
}

/** The requested URLs whose host is not `host` (e.g. `127.0.0.1:3000`). */
export function foreignRequests(log: PageLog, host: string): string[] {
  return log.requests.filter((url) => new URL(url).host !== host)
}

/** A small HTTP proxy a test puts between pages and apps (a load balancer). */
export interface TestProxy {
  /** `http://127.0.0.1:<port>` */
  readonly base: string
  /** Its open client connections: destroying them drops the pages' streams. */
  readonly sockets: Set<Socket>
}

/**
 * Starts a proxy on 127.0.0.1 whose requests `handle` answers (usually with
 * `forward`); its connections are destroyed and it is closed at teardown.
 */
export async function startProxy(
  t: Test,
  handle: (req: IncomingMessage, res: ServerResponse) => void
): Promise<TestProxy> {
  const sockets = new Set<Socket>()
  const server = createServer(handle)
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  const port = await listenUntilTeardown(t, server, sockets)
  return { base: `http://127.0.0.1:${port}`, sockets }
}

/**
 * Listens on a free 127.0.0.1 port and resolves to it; at teardown `sockets`
 * are destroyed and the server is closed.
 */
export async function listenUntilTeardown(
  t: Test,
  server: {
    listen(port: number, host: string, done: () => void): unknown
    close(done: () => void): unknown
    address(): unknown
  },
  sockets: Set<Socket>
): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  )
  return (server.address() as AddressInfo).port
}

/** Passes `req` on to `target` and its answer back; `watch` sees the upstream response before it is piped. */
export function forward(
  target: string,
  req: IncomingMessage,
  res: ServerResponse,
  watch?: (upstream: IncomingMessage) => void
): void {
  const upstream = request(target + req.url, { method: req.method, headers: req.headers, agent: false }, (up) => {
    res.writeHead(up.statusCode ?? 502, up.headers)
    watch?.(up)
    up.pipe(res)
  })
  upstream.on('error', () => res.destroy())
  res.on('close', () => upstream.destroy())
  req.pipe(upstream)
}
