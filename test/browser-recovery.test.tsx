import Fastify from 'fastify'
import t from 'tap'
import { HtmxScripts, Partial, SseSource } from '../components/index.js'
import htmlSse from '../lib/index.js'
import { launchChromium } from './helpers/browser.js'
import { until } from './helpers/sse.js'

const browser = await launchChromium()
t.teardown(() => browser.close())

for (const htmx of [2, 4] as const) {
  t.test(`htmx ${htmx}: <SseSource swap={false}> applies each <Partial> and swaps nothing itself`, async (t) => {
    const app = Fastify()
    await app.register(htmlSse, { heartbeatMs: 0 })
    app.get('/', async (_request, reply) => {
      const page = await (
        <html lang="en">
          <head>
            <title>partials</title>
            <HtmxScripts htmx={htmx} />
          </head>
          <body>
            <SseSource url="/events" htmx={htmx} swap={false} id="source">
              <ul id="notes"></ul>
              <p id="clock">waiting</p>
              <button type="button" id="load" hx-get="/fragment">
                load
              </button>
            </SseSource>
          </body>
        </html>
      )
      return reply.type('text/html; charset=utf-8').send(`<!doctype html>${page}`)
    })
    app.get('/events', (_request, reply) => {
      reply.sse({ topics: ['page'] })
    })
    app.get('/fragment', (_request, reply) => reply.type('text/html; charset=utf-8').send('loaded'))
    const base = await app.listen({ port: 0, host: '127.0.0.1' })
    t.teardown(() => app.close())
    const context = await browser.newContext()
    t.teardown(() => context.close())
    const page = await context.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    await page.goto(base)
    await until(() => app.sse.stats().topics.page === 1, 10_000, 'the stream to open')

    for (const n of ['one', 'two']) {
      await app.sse.publish(
        'page',
        <>
          <Partial target="#notes" swap="beforeend">
            <li safe>{n}</li>
          </Partial>
          <Partial target="#clock">{`at ${n}`}</Partial>
        </>
      )
    }
    // A message that is not a Partial: an element that swaps nothing itself leaves it out.
    await app.sse.publish('page', <b id="stray">stray</b>)
    await app.sse.publish(
      'page',
      <Partial target="#clock">
        <span id="marker">last</span>
      </Partial>
    )
    await page.waitForSelector('#marker', { timeout: 10_000 })
    t.same(
      await page.$$eval('#notes li', (els) => els.map((el) => el.textContent)),
      ['one', 'two'],
      'both items went into #notes, in order'
    )
    t.equal(await page.textContent('#clock'), 'last', '#clock holds the last Partial')
    t.equal(await page.$('#stray'), null, 'the plain message was not swapped into the element')
    t.ok(await page.$('#source > #notes'), "the element's own content is still there")
    await page.click('#load')
    await page.waitForFunction(() => document.querySelector('#load')?.textContent === 'loaded', null, {
      timeout: 10_000
    })
    t.pass('a child with hx-get swaps as usual: it does not inherit hx-swap="none"')
    t.same(errors, [], 'no page error')
  })
}
