/** The page of the browser tests: a stream whose events are appended to `#items` (`hx-swap="beforeend"`). */
import type { PropsWithChildren } from '@kitajs/html'
import type { Page } from 'playwright-core'
import { HtmxScripts, SseSource } from '../../components/index.js'

export interface ItemsPageProps {
  htmx: 2 | 4
  url: string
  lastEventId: string | null
}

/** A whole document, doctype included. */
export async function itemsPage({
  htmx,
  url,
  lastEventId,
  children
}: PropsWithChildren<ItemsPageProps>): Promise<string> {
  const page = await (
    <html lang="en">
      <head>
        <title>items</title>
        <HtmxScripts htmx={htmx} />
      </head>
      <body>
        <SseSource url={url} htmx={htmx} lastEventId={lastEventId} id="items" hx-swap="beforeend">
          {children}
        </SseSource>
      </body>
    </html>
  )
  return `<!doctype html>${page}`
}

/** The texts of the items a page shows, in order. */
export const itemsOf = (page: Page) => page.$$eval('#items .item', (els) => els.map((el) => el.textContent ?? ''))
