/**
 * Headless Chromium for the browser tests: the Debian package, driven by
 * playwright-core. Nothing is ever downloaded.
 */
import { existsSync } from 'node:fs'
import { type Browser, chromium, type Page } from 'playwright-core'

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
