import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { test } from 'tap'
import { HtmxScripts, Partial, SseSource } from '../components/index.js'
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
    '<div hx-ext="sse" sse-connect="/e" sse-swap="message" hx-swap="none" hx-disinherit="hx-swap"></div>',
    'swap={false}: messages apply their partials and swap nothing; the children do not inherit none'
  )
  t.equal(
    await (<SseSource url="/e" swap={false} hx-disinherit="hx-target" />),
    '<div hx-disinherit="hx-target hx-swap" hx-ext="sse" sse-connect="/e" sse-swap="message" hx-swap="none"></div>',
    'an hx-disinherit of the page is kept'
  )
  t.throws(() => <SseSource url="/e" swap={false} hx-swap="beforeend" />, {
    code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS',
    message: /swap=\{false\} renders hx-swap="none"/
  })
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
  t.equal(
    await (<SseSource htmx={4} url="/e" swap={false} />),
    '<div hx-sse:connect="/e" hx-swap="none"></div>',
    'swap={false}: messages apply their partials and swap nothing'
  )
  t.throws(() => <SseSource htmx={4} url="/e" swap={false} hx-swap="innerHTML" />, {
    code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS'
  })
  t.throws(() => <SseSource htmx={4} url="/e" swap="button" />, { code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS' })
  t.throws(() => <SseSource htmx={3 as 2} url="/e" />, { code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS' })
})

test('<SseSource lastEventId>: the first connection resumes from the id the page was rendered at', async (t) => {
  t.equal(
    await (<SseSource url="/notes/events" lastEventId="1700000000000-7" />),
    '<div hx-ext="sse" sse-connect="/notes/events?lastEventId=1700000000000-7" sse-swap="message"></div>'
  )
  t.equal(
    await (<SseSource htmx={4} url="/e?topic=a" lastEventId="1-2" />),
    '<div hx-sse:connect="/e?topic=a&lastEventId=1-2"></div>',
    'htmx 4, after an existing query'
  )
  t.equal(
    await (<SseSource url="/e#top" lastEventId={'a&b c"é'} />),
    '<div hx-ext="sse" sse-connect="/e?lastEventId=a%26b%20c%22%C3%A9#top" sse-swap="message"></div>',
    'encoded, before the fragment'
  )
  t.equal(
    await (<SseSource url="/e?" lastEventId="1-1" />),
    '<div hx-ext="sse" sse-connect="/e?lastEventId=1-1" sse-swap="message"></div>'
  )
  t.equal(
    await (<SseSource url="/e" lastEventId={null} />),
    '<div hx-ext="sse" sse-connect="/e" sse-swap="message"></div>',
    'null (an empty log) adds nothing'
  )
  t.throws(() => <SseSource url="/e?lastEventId=1-1" lastEventId="1-2" />, {
    code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS',
    message: /already carries lastEventId/
  })
  t.throws(() => <SseSource url="/e" lastEventId={7 as unknown as string} />, {
    code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS',
    message: /must be a string/
  })
})

test('<Partial>: a typed <hx-partial>', async (t) => {
  t.equal(
    await (
      <Partial target="#notes" swap="afterbegin">
        <li>one</li>
      </Partial>
    ),
    '<hx-partial hx-target="#notes" hx-swap="afterbegin"><li>one</li></hx-partial>'
  )
  t.equal(await (<Partial target="#clock">12:00</Partial>), '<hx-partial hx-target="#clock">12:00</hx-partial>')
  t.equal(
    await (<Partial target={'#a" onclick="x'} data-n="1" />),
    '<hx-partial data-n="1" hx-target="#a&#34; onclick=&#34;x"></hx-partial>',
    'attributes pass through, escaped'
  )
})

const hashOf = (file: string) => createHash('sha256').update(readFileSync(file)).digest('base64url').slice(0, 12)
const RESUME_SCRIPT = fileURLToPath(new URL('../client/htmx2-resume.js', import.meta.url))
const RESUME_SCRIPT_4 = fileURLToPath(new URL('../client/htmx4-resume.js', import.meta.url))
const FILES = {
  'htmx2.min.js': require.resolve('htmx.org/dist/htmx.min.js'),
  'htmx2-sse.min.js': require.resolve('htmx-ext-sse/dist/sse.min.js'),
  'htmx2-resume.js': RESUME_SCRIPT,
  'htmx4.min.js': require.resolve('htmx4/dist/htmx.min.js'),
  'htmx4-sse.min.js': require.resolve('htmx4/dist/ext/hx-sse.min.js'),
  'htmx4-resume.js': RESUME_SCRIPT_4
}
const versioned = (name: keyof typeof FILES, prefix = '/fastify-html-sse/') => `${prefix}${hashOf(FILES[name])}/${name}`

test('<HtmxScripts> links the files the plugin serves, at paths versioned by their content', async (t) => {
  t.equal(
    await (<HtmxScripts />),
    `<script src="${versioned('htmx2.min.js')}"></script><script src="${versioned('htmx2-sse.min.js')}"></script>` +
      `<script src="${versioned('htmx2-resume.js')}"></script>`,
    'htmx 2, its SSE extension, then the script that keeps the page in place'
  )
  t.equal(
    await (<HtmxScripts htmx={4} prefix="/assets/" />),
    `<script src="${versioned('htmx4.min.js', '/assets/')}"></script><script src="${versioned('htmx4-sse.min.js', '/assets/')}"></script>` +
      `<script src="${versioned('htmx4-resume.js', '/assets/')}"></script>`,
    'htmx 4, hx-sse, then the script that retries a failed first connect'
  )
  t.match(await (<HtmxScripts htmx={4} />), /\/fastify-html-sse\/[\w-]{12}\/htmx4\.min\.js/)
  t.throws(() => <HtmxScripts htmx={5 as 4} />, { code: 'FST_ERR_HTML_SSE_COMPONENT_PROPS' })
})

test('the plugin serves the installed, pinned client files: versioned paths immutable, bare names revalidated', async (t) => {
  const { app } = await makeApp()
  const base = await listen(app)
  t.teardown(() => app.close())
  for (const [name, file] of Object.entries(FILES) as Array<[keyof typeof FILES, string]>) {
    const res = await fetch(base + versioned(name))
    t.equal(res.status, 200, name)
    t.equal(res.headers.get('content-type'), 'text/javascript; charset=utf-8')
    t.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable', `${name} is immutable`)
    t.equal(await res.text(), readFileSync(file, 'utf8'), `${name} is the installed file`)

    const bare = await fetch(`${base}/fastify-html-sse/${name}`)
    t.equal(bare.status, 200, `${name} at its bare path`)
    t.equal(bare.headers.get('cache-control'), 'no-cache')
    const etag = bare.headers.get('etag')
    t.equal(etag, `"${hashOf(file)}"`)
    t.equal(await bare.text(), readFileSync(file, 'utf8'))
    const again = await fetch(`${base}/fastify-html-sse/${name}`, { headers: { 'if-none-match': etag as string } })
    t.equal(again.status, 304, `${name} revalidates`)
  }
  const head = await fetch(base + versioned('htmx2.min.js'), { method: 'HEAD' })
  t.equal(head.status, 200, 'HEAD')
  t.equal(await head.text(), '')
  t.equal((await fetch(`${base}/fastify-html-sse/htmx.js`)).status, 404, 'an unknown file')
  t.equal(
    (await fetch(`${base}/fastify-html-sse/${hashOf(FILES['htmx2.min.js'])}/htmx.js`)).status,
    404,
    'an unknown file, versioned'
  )
  t.equal((await fetch(`${base}/fastify-html-sse/AAAAAAAAAAAA/htmx2.min.js`)).status, 404, 'another version')
  t.equal(
    (await fetch(`${base}/fastify-html-sse/${hashOf(FILES['htmx4.min.js'])}/htmx2.min.js`)).status,
    404,
    "another file's hash"
  )
  t.equal((await fetch(`${base}/fastify-html-sse/..%2Fpackage.json`)).status, 404)
  t.equal((await fetch(`${base}/fastify-html-sse/__proto__`)).status, 404)
  t.match(readFileSync(require.resolve('htmx.org/package.json'), 'utf8'), /"version": "2\./, 'htmx 2 is pinned')
  t.match(readFileSync(require.resolve('htmx4/package.json'), 'utf8'), /"version": "4\./, 'htmx 4 is pinned')
})

test('assetsPrefix moves or turns off the client files', async (t) => {
  const moved = await makeApp({ assetsPrefix: '/static/sse/' })
  t.equal((await moved.app.inject('/static/sse/htmx4.min.js')).statusCode, 200)
  const linked = /src="([^"]+htmx4\.min\.js)"/.exec(await (<HtmxScripts htmx={4} prefix="/static/sse/" />))?.[1]
  t.equal(
    (await moved.app.inject(linked as string)).statusCode,
    200,
    'at the versioned path <HtmxScripts prefix> links'
  )
  t.equal((await moved.app.inject('/fastify-html-sse/htmx4.min.js')).statusCode, 404)
  await moved.app.close()
  const off = await makeApp({ assetsPrefix: false })
  t.equal((await off.app.inject('/fastify-html-sse/htmx4.min.js')).statusCode, 404)
  await off.app.close()
})
