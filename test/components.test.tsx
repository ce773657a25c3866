import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { test } from 'tap'
import { HtmxScripts, SseSource } from '../components/index.js'
import { makeApp } from './helpers/app.js'
import { listen } from './helpers/sse.js'

const require = createRequire(import.meta.url)

test('<SseSource> for htmx 2: hx-ext, sse-connect, sse-swap, sse-close; other attributes pass through', async (t) => {
  const html = await (
    <SseSource url="/events?a=1&b=2" id="feed" class="card" close="done">
      <p>waiting</p>
    </SseSource>
  )
  t.equal(
    html,
    '<div id="feed" class="card" hx-ext="sse" sse-connect="/events?a=1&b=2" sse-swap="message" sse-close="done"><p>waiting</p></div>'
  )
  t.equal(
    await (<SseSource url="/e" swap="button" hx-ext="head-support" />),
    '<div hx-ext="head-support, sse" sse-connect="/e" sse-swap="button"></div>',
    'an existing hx-ext is kept'
  )
  t.equal(
    await (<SseSource url="/e" swap={false} />),
    '<div hx-ext="sse" sse-connect="/e"></div>',
    'swap={false} connects without swapping'
  )
  t.equal(
    await (<SseSource url={'/e" onload="alert(1)'} />),
    '<div hx-ext="sse" sse-connect="/e&#34; onload=&#34;alert(1)" sse-swap="message"></div>',
    'the url is escaped'
  )
})

test('<SseSource htmx={4}>: hx-sse:connect and hx-sse:close; named swaps are refused', async (t) => {
  t.equal(
    await (
      <SseSource htmx={4} url="/events" close="done" id="job" hx-swap="beforeend">
        <span>0%</span>
      </SseSource>
    ),
    '<div hx-sse:connect="/events" hx-sse:close="done" id="job" hx-swap="beforeend"><span>0%</span></div>'
  )
  t.equal(await (<SseSource htmx={4} url="/e" swap={false} />), '<div hx-sse:connect="/e"></div>')
  t.throws(() => <SseSource htmx={4} url="/e" swap="button" />, { code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS' })
  t.throws(() => <SseSource htmx={3 as 2} url="/e" />, { code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS' })
})

test('<HtmxScripts> links the files the plugin serves', async (t) => {
  t.equal(
    await (<HtmxScripts />),
    '<script src="/fastify-html-sse/htmx2.min.js"></script><script src="/fastify-html-sse/htmx2-sse.min.js"></script>'
  )
  t.equal(
    await (<HtmxScripts htmx={4} prefix="/assets/" />),
    '<script src="/assets/htmx4.min.js"></script><script src="/assets/htmx4-sse.min.js"></script>'
  )
  t.throws(() => <HtmxScripts htmx={5 as 4} />, { code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS' })
})

test('the plugin serves the installed, pinned htmx files', async (t) => {
  const { app } = await makeApp()
  const base = await listen(app)
  t.teardown(() => app.close())
  const files = {
    'htmx2.min.js': 'htmx.org/dist/htmx.min.js',
    'htmx2-sse.min.js': 'htmx-ext-sse/dist/sse.min.js',
    'htmx4.min.js': 'htmx4/dist/htmx.min.js',
    'htmx4-sse.min.js': 'htmx4/dist/ext/hx-sse.min.js'
  }
  for (const [name, file] of Object.entries(files)) {
    const res = await fetch(`${base}/fastify-html-sse/${name}`)
    t.equal(res.status, 200, name)
    t.equal(res.headers.get('content-type'), 'text/javascript; charset=utf-8')
    t.equal(await res.text(), readFileSync(require.resolve(file), 'utf8'), `${name} is the installed file`)
  }
  t.equal((await fetch(`${base}/fastify-html-sse/htmx.js`)).status, 404)
  t.equal((await fetch(`${base}/fastify-html-sse/..%2Fpackage.json`)).status, 404)
  t.match(readFileSync(require.resolve('htmx.org/package.json'), 'utf8'), /"version": "2\./, 'htmx 2 is pinned')
  t.match(readFileSync(require.resolve('htmx4/package.json'), 'utf8'), /"version": "4\./, 'htmx 4 is pinned')
})

test('assetsPrefix moves or turns off the client files', async (t) => {
  const moved = await makeApp({ assetsPrefix: '/static/sse/' })
  t.equal((await moved.app.inject('/static/sse/htmx4.min.js')).statusCode, 200)
  t.equal((await moved.app.inject('/fastify-html-sse/htmx4.min.js')).statusCode, 404)
  await moved.app.close()
  const off = await makeApp({ assetsPrefix: false })
  t.equal((await off.app.inject('/fastify-html-sse/htmx4.min.js')).statusCode, 404)
  await off.app.close()
})
