import Fastify, { type FastifyInstance } from 'fastify'
import type { Page } from 'playwright-core'
import t, { type Test } from 'tap'
import htmlSse from '../lib/index.js'
import { forward, launchChromium, startProxy } from './helpers/browser.js'
import { itemsOf, itemsPage } from './helpers/items-page.js'
import { until } from './helpers/sse.js'

const browser = await launchChromium()
t.teardown(() => browser.close())

interface StreamRequest {
  header: string | undefined
  query: string | undefined
}

interface ItemsApp {
  app: FastifyInstance
  base: string
  /** What each stream request carried as its position. */
  streams: StreamRequest[]
  /** Publishes item `n`. */
  publish(n: number | string): Promise<string>
  /** Set to hold the next stream request before it opens; resolve to let it through. */
  hold: { entered: () => void; gate: Promise<void> } | null
}

/** A page whose state is a list of items, and a stream that appends new ones (`hx-swap="beforeend"`). */
async function itemsApp(t: Test): Promise<ItemsApp> {
  // retry: 250 makes the browser's own reconnect quick; the proxy's 502s outlast it.
  const app = Fastify()
  await app.register(htmlSse, { heartbeatMs: 0, retryMs: 250 })
  const items: string[] = []
  const state: ItemsApp = {
    app,
    base: '',
    streams: [],
    hold: null,
    async publish(n) {
      items.push(String(n))
      return app.sse.publish(
        'items',
        <p class="item" safe>
          {String(n)}
        </p>
      )
    }
  }
  app.get<{ Querystring: { htmx?: string } }>('/', async (request, reply) => {
    const htmx = request.query.htmx === '4' ? 4 : 2
    // Take the state, then the id it corresponds to.
    const rendered = [...items]
    const lastEventId = await app.sse.lastId()
    const children = rendered.map((n) => (
      <p class="item" safe>
        {n}
      </p>
    ))
    return reply.type('text/html; charset=utf-8').send(await itemsPage({ htmx, url: '/items', lastEventId, children }))
  })
  app.get<{ Querystring: { lastEventId?: string } }>('/items', async (request, reply) => {
    const hold = state.hold
    state.hold = null
    if (hold !== null) {
      hold.entered()
      await hold.gate
    }
    const header = request.headers['last-event-id']
    state.streams.push({ header: typeof header === 'string' ? header : undefined, query: request.query.lastEventId })
    reply.sse({ topics: ['items'] })
  })
  app.get('/favicon.ico', (_request, reply) => reply.code(204).send())
  state.base = await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return state
}

interface Proxy {
  base: string
  /** 502 responses given. */
  refused: number
  /** Drops every open connection, then answers 502 for `ms`. */
  outage(ms: number): Promise<void>
}

/** A reverse proxy on 127.0.0.1 in front of `target`, as a load balancer during a deploy. */
async function proxyTo(t: Test, target: string): Promise<Proxy> {
  let failing = false
  const { base, sockets } = await startProxy(t, (req, res) => {
    if (failing) {
      proxy.refused++
      res.writeHead(502, { 'content-type': 'text/plain', connection: 'close' }).end('Bad Gateway')
      return
    }
    forward(target, req, res)
  })
  const proxy: Proxy = {
    base,
    refused: 0,
    async outage(ms) {
      failing = true
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => setTimeout(resolve, ms))
      failing = false
    }
  }
  return proxy
}

/** Waits until the page shows an item numbered `n` or higher. */
async function shows(page: Page, n: number): Promise<void> {
  await page.waitForFunction(
    (n) => Array.from(document.querySelectorAll('#items .item')).some((el) => Number(el.textContent) >= n),
    n,
    { timeout: 15_000 }
  )
}

for (const htmx of [2, 4] as const) {
  t.test(
    `htmx ${htmx}: a proxy drops the stream and answers 502 for 1.5 s; every item arrives once, in order`,
    async (t) => {
      const items = await itemsApp(t)
      const proxy = await proxyTo(t, items.base)
      for (let n = 1; n <= 3; n++) await items.publish(n)

      const context = await browser.newContext()
      t.teardown(() => context.close())
      const page = await context.newPage()
      const pageErrors: string[] = []
      page.on('pageerror', (err) => pageErrors.push(err.message))
      await page.goto(`${proxy.base}/?htmx=${htmx}`)
      await until(() => items.app.sse.stats().topics.items === 1, 10_000, 'the stream to open')

      // 25 items a second, from before the outage to after it.
      let n = 3
      let publishing = Promise.resolve()
      const timer = setInterval(() => {
        publishing = publishing.then(() => items.publish(++n).then(() => undefined))
      }, 40)
      t.teardown(() => clearInterval(timer))

      await shows(page, 10)
      const before = items.streams.length
      const outageAt = n
      await proxy.outage(1500)
      const resumedAt = n
      await until(
        () => items.streams.length > before && items.app.sse.stats().topics.items === 1,
        15_000,
        'the page to reconnect through the proxy'
      )
      await shows(page, resumedAt + 10)
      clearInterval(timer)
      await publishing
      const last = n
      await items.publish('end')
      await page.waitForFunction(() => document.querySelector('#items .item:last-child')?.textContent === 'end')

      const expected = [...Array.from({ length: last }, (_, i) => String(i + 1)), 'end']
      t.same(await itemsOf(page), expected, `items 1 to ${last}, each once, in order`)
      t.ok(proxy.refused > 0, `the proxy answered 502 ${proxy.refused} times`)
      t.ok(
        resumedAt > outageAt && last > resumedAt,
        `items ${outageAt + 1} to ${resumedAt} published during the outage`
      )
      const reconnects = items.streams.slice(before)
      t.ok(
        reconnects.every((stream) => stream.header !== undefined || stream.query !== undefined),
        'every reconnect carried a position'
      )
      if (htmx === 2) {
        // The EventSource that replaced the failed one sent no header: the page's script put its id in the query.
        const first = items.streams[0] as StreamRequest
        t.ok(
          reconnects.some((stream) => stream.header === undefined && stream.query !== first.query),
          'a replacement EventSource resumed from the lastEventId parameter'
        )
      } else {
        t.ok(
          reconnects.every((stream) => stream.header !== undefined),
          "hx-sse resumes with the Last-Event-ID header, which wins over the page's stale parameter"
        )
      }
      t.same(pageErrors, [], 'no page error')
    }
  )

  t.test(
    `htmx ${htmx}: an item published between rendering and connecting arrives; older ones do not repeat`,
    async (t) => {
      const items = await itemsApp(t)
      for (let n = 1; n <= 3; n++) await items.publish(n)
      let entered!: () => void
      let release!: () => void
      const arrived = new Promise<void>((resolve) => {
        entered = resolve
      })
      items.hold = {
        entered,
        gate: new Promise<void>((resolve) => {
          release = resolve
        })
      }

      const context = await browser.newContext()
      t.teardown(() => context.close())
      const page = await context.newPage()
      await page.goto(`${items.base}/?htmx=${htmx}`)
      t.same(await itemsOf(page), ['1', '2', '3'], 'the page renders the state')
      await arrived
      await items.publish(4)
      release()
      await page.waitForFunction(() => document.querySelectorAll('#items .item').length >= 4)
      await until(() => items.app.sse.stats().topics.items === 1, 5000, 'the stream to be live')
      await items.publish(5)
      await page.waitForFunction(() => document.querySelector('#items .item:last-child')?.textContent === '5')
      t.same(await itemsOf(page), ['1', '2', '3', '4', '5'], 'item 4 arrived, once; 1 to 3 did not come again')
      t.equal(items.streams[0]?.header, undefined, 'the first connection sent no header')
      t.match(items.streams[0]?.query, /^\d+-3$/, 'it resumed from the id the page was rendered at')
    }
  )
}
