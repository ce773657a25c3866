/**
 * Type-level tests, checked by `npm run typecheck` (tsc --noEmit). Each
 * `@ts-expect-error` fails the check if the line below it stops being an error.
 */
import Fastify from 'fastify'
import { HtmxScripts, SseSource } from '../../components/index.js'
import { redisBroker } from '../../lib/broker/redis.js'
import htmlSse, {
  type Broker,
  type HtmlSseOptions,
  memoryBroker,
  type SseSink,
  type SseStats,
  sseComment,
  sseMessage
} from '../../lib/index.js'
import { type CollectedEvent, collectEvents } from '../../lib/testing.js'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
function expectType<T extends true>(_: T): void {}

async function Async(): Promise<string> {
  return '<b>async</b>'
}

// sseMessage keeps the sync path sync, like @kitajs/html itself.
const s = sseMessage('<b>x</b>')
expectType<Equal<typeof s, string>>(true)
const p = sseMessage(Promise.resolve('<b>x</b>'), 'e', { id: '1', retry: 5 })
expectType<Equal<typeof p, Promise<string>>>(true)
const j = sseMessage(<b>jsx</b>)
expectType<Equal<typeof j, JSX.Element>>(true)
const a = sseMessage(<Async />)
expectType<Equal<typeof a, JSX.Element>>(true)
const c = sseComment('x')
expectType<Equal<typeof c, string>>(true)
// @ts-expect-error html must be a string or JSX.Element
sseMessage(42)
// @ts-expect-error retry is a number
sseMessage('x', 'e', { retry: '5' })

const app = Fastify()
const options: HtmlSseOptions = {
  heartbeatMs: 0,
  retryMs: 1000,
  replay: 10,
  maxBufferedBytes: 1,
  broker: memoryBroker()
}
await app.register(htmlSse, options)
// @ts-expect-error unknown option types are refused
await app.register(htmlSse, { heartbeatMs: '5' })

app.get('/events', (_req, reply) => {
  const sink: SseSink = reply.sse(
    (async function* () {
      yield sseMessage(<p>a</p>)
      yield <p>b</p>
      yield { html: <Async />, event: 'x', id: '1' }
    })(),
    { topics: ['a'] }
  )
  const same: SseSink = reply.sse({ topics: ['b'] })
  expectType<Equal<typeof sink.lastEventId, string | null>>(true)
  expectType<Equal<ReturnType<typeof sink.send>, Promise<boolean>>>(true)
  expectType<Equal<typeof sink.signal, AbortSignal>>(true)
  void same
  // @ts-expect-error a source yields HTML, frames or { html }
  reply.sse([42])
  // @ts-expect-error topics is an array
  reply.sse({ topics: 'a' })
})

const id: Promise<string> = app.sse.publish('topic', <p>hi</p>, 'message', { retry: 1 })
// @ts-expect-error publish assigns ids itself
app.sse.publish('topic', 'x', 'message', { id: '1' })
const stats: SseStats = app.sse.stats()
expectType<Equal<typeof stats.topics, Record<string, number>>>(true)

const broker: Broker = redisBroker({ url: 'redis://127.0.0.1:6379', prefix: 'x:', replay: 5 })
void broker

const events: Promise<CollectedEvent[]> = collectEvents(app, '/events', { count: 1, timeoutMs: 10 })
void id
void events
// collectEvents takes HTTP/2 and HTTPS apps as well, whose instance types differ by server.
const h2events: Promise<CollectedEvent[]> = collectEvents(Fastify({ http2: true }), '/events', {
  count: 1,
  transport: 'inject'
})
void h2events
void collectEvents(Fastify({ https: { key: '', cert: '' } }), '/events', { count: 1 })
// @ts-expect-error a transport is 'inject' or 'socket'
void collectEvents(app, '/events', { count: 1, transport: 'udp' })

const page: JSX.Element = (
  <html lang="en">
    <head>
      <HtmxScripts htmx={4} />
    </head>
    <body>
      <SseSource url="/events" htmx={2} swap="button" class="card" />
      {/* @ts-expect-error htmx is 2 or 4 */}
      <SseSource url="/events" htmx={3} />
    </body>
  </html>
)
void page
