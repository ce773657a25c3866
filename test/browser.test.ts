/**
 * The example in a real browser (Debian's Chromium), with htmx 2 and htmx 4:
 * the clock ticks, the button swaps in, a note reaches every tab, a job runs
 * to 100% and closes its stream, the open-tab count follows tabs, a `reset`
 * refetches the list. No request leaves the app, nothing logs an error.
 *
 * The example imports the package by name, which resolves to dist/: `npm test`
 * builds first; run `npm run build` before running this file alone.
 */
import { copyFile, mkdir } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Page } from 'playwright-core'
import t from 'tap'
import { buildApp } from '../example/app.js'
import { foreignRequests, launchChromium, type PageLog, watchPage } from './helpers/browser.js'
import { until } from './helpers/sse.js'

const artifacts = fileURLToPath(new URL('./artifacts/', import.meta.url))
const readmeScreenshot = fileURLToPath(new URL('../example/screenshot.png', import.meta.url))

// First: without Chromium this file fails here, with how to install it.
const browser = await launchChromium()
const app = await buildApp()
const base = await app.listen({ port: 0, host: '127.0.0.1' })
t.teardown(async () => {
  await browser.close()
  await app.close()
})

/** Waits until the clock shows an update number above `above`, and returns it. */
async function clockAbove(page: Page, above: number): Promise<number> {
  const handle = await page.waitForFunction((above) => {
    const match = /Update #(\d+)/.exec(document.querySelector('#clock')?.textContent ?? '')
    return match !== null && Number(match[1]) > above ? Number(match[1]) : false
  }, above)
  return (await handle.jsonValue()) as number
}

/** Waits until the page's open-stream count reads `count`. */
async function presenceIs(page: Page, count: number): Promise<void> {
  await page.waitForFunction(
    (count) => Number.parseInt(document.querySelector('#presence')?.textContent ?? '', 10) === count,
    count
  )
}

await mkdir(artifacts, { recursive: true })

for (const htmx of [2, 4] as const) {
  t.test(`htmx ${htmx}`, async (t) => {
    const path = htmx === 2 ? '/' : '/?htmx=4'
    const log: PageLog = { errors: [], requests: [] }
    // One context: its tabs share the browser's six connections per host, as a user's do.
    const context = await browser.newContext({ viewport: { width: 1180, height: 720 } })
    t.teardown(() => context.close())
    const open = async (url = path): Promise<Page> => {
      const page = watchPage(await context.newPage(), log)
      page.setDefaultTimeout(10_000)
      await page.goto(base + url)
      return page
    }

    const a = await open()
    t.match(await a.title(), `htmx ${htmx}`)
    const first = await clockAbove(a, 0)
    const second = await clockAbove(a, first)
    const third = await clockAbove(a, second)
    t.ok(first < second && second < third, `the clock ticks: #${first}, #${second}, #${third}`)

    await a.waitForFunction(() => Number(document.querySelector('#button button b')?.textContent) >= 1)
    t.pass('the button stream swaps in')

    const b = await open()
    await clockAbove(b, 0)
    await until(() => app.sse.stats().connections === 2, 5000, 'two page streams')
    const fromA = `Hi from tab A: <b>this</b> stays text & "quoted"`
    await a.fill('input[name=text]', fromA)
    await a.click('form button[type=submit]')
    for (const page of [a, b]) {
      await page.waitForFunction((text) => document.querySelector('#notes li p')?.textContent === text, fromA)
    }
    t.pass('a note posted in one tab appears in both')
    t.equal(await b.locator('#notes li p b').count(), 0, 'user text never becomes HTML')
    t.equal(await a.inputValue('input[name=text]'), '', 'the form comes back empty')
    const fromB = `Hello from tab B (htmx ${htmx})`
    await b.fill('input[name=text]', fromB)
    await b.press('input[name=text]', 'Enter')
    await a.waitForFunction((text) => document.querySelector('#notes li p')?.textContent === text, fromB)
    t.pass('and the other way round')

    await presenceIs(a, 2)
    const c = await open()
    await presenceIs(a, 3)
    await c.close()
    await presenceIs(a, 2)
    t.pass('the open-tab count follows a tab opening and closing')

    const jobsBefore = await a.locator('#jobs > .job').count()
    await a.click('text=Start a 3-second job')
    for (const page of [a, b]) {
      await page.waitForFunction((n) => document.querySelectorAll('#jobs > .job').length === n, jobsBefore + 1)
      await page.waitForSelector('#jobs > .job:first-child [aria-valuenow="100"]')
    }
    t.match(await a.textContent('#jobs > .job:first-child'), /Done in \d/, 'the job reaches 100% in both tabs')
    await until(
      () => !Object.keys(app.sse.stats().topics).some((topic) => topic.startsWith('job:')),
      5000,
      'the job streams to close'
    )
    t.pass('both tabs close the job stream on `done`')
    await presenceIs(a, 2)

    // A Last-Event-ID the server cannot resume from (as after a restart): the
    // stream starts with `reset`, and the note list refetches itself.
    const d = watchPage(await context.newPage(), log)
    d.setDefaultTimeout(10_000)
    await d.addInitScript(() => {
      document.addEventListener('DOMContentLoaded', () =>
        document.querySelector('#notes')?.setAttribute('data-initial', '')
      )
    })
    const refetch = d.waitForResponse((response) => new URL(response.url()).pathname === '/notes')
    await d.goto(`${base}${path}${htmx === 2 ? '?' : '&'}lastEventId=stale`)
    t.equal((await refetch).status(), 200, 'a reset refetches /notes')
    await d.waitForSelector('#notes:not([data-initial])', { state: 'attached' })
    t.equal(await d.textContent('#notes li p'), fromB, 'the refetched list is swapped in')
    await d.close()

    await a.screenshot({ path: `${artifacts}example-htmx${htmx}.png`, fullPage: true })
    // The README's screenshot is refreshed on demand, so a test run leaves the work tree clean.
    if (htmx === 2 && process.env.UPDATE_SCREENSHOT === '1')
      await copyFile(`${artifacts}example-htmx2.png`, readmeScreenshot)

    await Promise.all([a.close(), b.close()])
    await until(() => app.sse.stats().connections === 0, 5000, 'every stream to close')
    t.same(log.errors, [], 'no console error, no page error')
    t.same(foreignRequests(log, new URL(base).host), [], 'no request leaves the app')
    t.ok(
      log.requests.some((url) => new RegExp(`/fastify-html-sse/[\\w-]{12}/htmx${htmx}\\.min\\.js$`).test(url)),
      'htmx comes from the plugin, at a versioned path'
    )
    t.equal(
      log.requests.some((url) => url.endsWith('/htmx2-resume.js')),
      htmx === 2,
      'the resume script is loaded for htmx 2 only'
    )
  })
}
