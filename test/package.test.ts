/**
 * Packs the tarball, installs it into an empty project and uses every entry
 * point from plain JavaScript, as a user would, and from TypeScript in a strict
 * project that checks the package's declarations (`skipLibCheck: false`)
 * without any optional peer installed.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { test } from 'tap'
import { privateRedis } from './helpers/redis.js'

const root = resolve(import.meta.dirname, '..')
const run = (cmd: string, args: string[], cwd: string, env: Record<string, string> = {}) =>
  execFileSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 180_000,
    env: { ...process.env, ...env }
  })

const typescript = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
/** What tsc reports for the project in `dir` ('' when it compiles). */
const tsc = (dir: string): string => {
  try {
    run(process.execPath, [typescript, '-p', dir, '--pretty', 'false'], dir)
    return ''
  } catch (err) {
    const { stdout, message } = err as { stdout?: string; message: string }
    return stdout || message
  }
}

const CONSUMER = `
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import htmlSse, { sseMessage, sseComment, memoryBroker, FST_ERR_HTML_SSE_EVENT_NEWLINE } from 'fastify-html-sse'
import { SseSource, HtmxScripts } from 'fastify-html-sse/components'
import { collectEvents, openEvents } from 'fastify-html-sse/testing'

assert.equal(sseMessage('<b>a\\nb</b>', 'x', { id: '1' }), 'event: x\\nid: 1\\ndata: <b>a\\ndata: b</b>\\n\\n')
assert.equal(sseComment('hi'), ': hi\\n\\n')
assert.throws(() => sseMessage('x', 'a\\nb'), (err) => err instanceof TypeError && err.code === 'FST_ERR_HTML_SSE_EVENT_NEWLINE')
assert.equal(typeof FST_ERR_HTML_SSE_EVENT_NEWLINE, 'function')
assert.match(SseSource({ url: '/e', children: 'x' }), /sse-connect="\\/e"/)
assert.match(HtmxScripts({ htmx: 4 }), /htmx4\\.min\\.js/)

const app = Fastify()
await app.register(htmlSse, { broker: memoryBroker({ replay: 10 }), heartbeatMs: 0 })
app.get('/events', (req, reply) => {
  reply.sse(['<p>one</p>', { html: '<p>two</p>', event: 'second' }])
})
const events = await collectEvents(app, '/events', { count: 2 })
assert.deepEqual(events.map((e) => [e.event, e.data]), [['message', '<p>one</p>'], ['second', '<p>two</p>']])
const client = await openEvents(app, '/events', { transport: 'socket' })
assert.deepEqual((await client.waitFor(2)).map((e) => e.event), [undefined, 'second'])
await client.close()
assert.equal((await app.inject('/fastify-html-sse/htmx2.min.js')).statusCode, 200)
assert.equal((await app.inject('/fastify-html-sse/htmx4-sse.min.js')).statusCode, 200)
await app.close()
console.log('core ok')
`

/** TypeScript that uses the three entries a project without Redis, Postgres or metrics imports. */
const TS_CONSUMER = `
import Fastify from 'fastify'
import htmlSse, { type HtmlSseOptions, type SseSink, memoryBroker, sseMessage } from 'fastify-html-sse'
import { HtmxScripts, Partial, SseSource } from 'fastify-html-sse/components'
import { type CollectedEvent, collectEvents, openEvents, type SseClient } from 'fastify-html-sse/testing'

const options: HtmlSseOptions = { broker: memoryBroker({ replay: 10 }), heartbeatMs: 0 }
const app = Fastify()
await app.register(htmlSse, options)
app.get('/', (_req, reply) => {
  reply.type('text/html').send(
    <html lang="en">
      <head>
        <HtmxScripts />
      </head>
      <body>
        <SseSource url="/events" lastEventId={null}>
          <p id="x">waiting</p>
        </SseSource>
      </body>
    </html>
  )
})
app.get('/events', (_req, reply) => {
  const sink: SseSink = reply.sse([
    '<p>one</p>',
    { html: sseMessage(<Partial target="#x">two</Partial>), event: 'second' }
  ])
  return sink
})
const events: CollectedEvent[] = await collectEvents(app, '/events', { count: 2 })
if (events.length !== 2) throw new Error('two events expected')
const client: SseClient = await openEvents(app, '/events', { bytesPerSecond: 10_000 })
if ((await client.waitFor(2))[1]?.event !== 'second') throw new Error('a named second event expected')
await client.close()
const page = await app.inject('/')
if (!page.body.includes('sse-connect="/events"')) throw new Error('the page connects')
await app.close()
console.log('typescript ok')
`

/** The strict settings of a TypeScript project with the package's declarations checked too. */
const STRICT_TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    skipLibCheck: false,
    jsx: 'react-jsx',
    jsxImportSource: '@kitajs/html',
    types: ['node'],
    outDir: 'out',
    rootDir: 'src'
  },
  include: ['src']
}

const REDIS_CONSUMER = `
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import htmlSse from 'fastify-html-sse'
import { redisBroker } from 'fastify-html-sse/redis'
import { collectEvents } from 'fastify-html-sse/testing'

const app = Fastify()
const broker = redisBroker({ url: process.env.REDIS_URL, prefix: 'pkgtest:' })
await app.register(htmlSse, { broker, heartbeatMs: 0 })
app.addHook('onClose', () => broker.close())
app.get('/events', (req, reply) => {
  reply.sse({ topics: ['t'] })
})
const pending = collectEvents(app, '/events', { count: 1 })
while (app.sse.stats().topics.t !== 1) await new Promise((resolve) => setTimeout(resolve, 5))
await app.sse.publish('t', '<p>through redis</p>')
assert.equal((await pending)[0].data, '<p>through redis</p>')
await app.close()
console.log('redis ok')
`

test('the packed package installs into an empty project; every entry works from plain JavaScript and strict TypeScript', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fastify-html-sse-pkg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  run('npm', ['pack', '--pack-destination', dir, '--silent'], root)
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'))
  t.ok(tarball, 'npm pack made a tarball')
  const listing = run('tar', ['-tzf', join(dir, tarball as string)], dir)
  t.match(listing, /package\/dist\/lib\/index\.js/)
  t.match(listing, /package\/dist\/lib\/index\.d\.ts/)
  t.match(listing, /package\/dist\/components\/index\.js/)
  t.notMatch(listing, /package\/(test|bench|example|lib)\//, 'no sources, tests or benchmarks shipped')

  const app = join(dir, 'app')
  run('mkdir', ['-p', app], dir)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
  const npmFlags = ['--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error']
  run('npm', ['install', join(dir, tarball as string), ...npmFlags], app)
  t.notOk(
    readdirSync(join(app, 'node_modules')).includes('redis'),
    'the Redis client is not installed unless asked for'
  )
  writeFileSync(join(app, 'core.mjs'), CONSUMER)
  t.match(run('node', ['core.mjs'], app), /core ok/, 'core, components and testing entries work without Redis')

  // TypeScript with declarations checked, as a strict project has them (tsc's default), and none of
  // the optional peers: @types/node only (the testing entry speaks of sockets).
  const nodeTypes = JSON.parse(
    readFileSync(join(root, 'node_modules', '@types', 'node', 'package.json'), 'utf8')
  ).version
  run('npm', ['install', `@types/node@${nodeTypes}`, ...npmFlags], app)
  for (const peer of ['@opentelemetry/api', 'redis', 'pg', '@types/pg']) {
    t.notOk(existsSync(join(app, 'node_modules', peer)), `${peer} is not installed`)
  }
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(STRICT_TSCONFIG))
  run('mkdir', ['-p', join(app, 'src')], app)
  writeFileSync(join(app, 'src', 'consumer.tsx'), TS_CONSUMER)
  t.equal(tsc(app), '', 'the plugin, components and testing entries type-check with skipLibCheck: false')
  t.match(run('node', [join('out', 'consumer.js')], app), /typescript ok/, 'and the compiled file runs')

  const redisVersion = (await import('redis/package.json', { with: { type: 'json' } })).default.version
  run('npm', ['install', `redis@${redisVersion}`, ...npmFlags], app)
  writeFileSync(join(app, 'redis.mjs'), REDIS_CONSUMER)
  // The redis entry's declarations need its driver and nothing else optional.
  writeFileSync(
    join(app, 'src', 'redis.ts'),
    "import { redisBroker } from 'fastify-html-sse/redis'\nexport const broker = redisBroker({ url: 'redis://127.0.0.1:1' })\n"
  )
  t.equal(tsc(app), '', 'with redis installed, the redis entry type-checks too (skipLibCheck: false)')
  const redis = await privateRedis(t)
  t.match(
    run('node', ['redis.mjs'], app, { REDIS_URL: redis.url }),
    /redis ok/,
    'the redis entry works once the client is installed'
  )
})
