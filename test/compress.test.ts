import { request } from 'node:http'
import compress from '@fastify/compress'
import { test } from 'tap'
import { makeApp } from './helpers/app.js'
import { listen, parseAll, until } from './helpers/sse.js'

test('with @fastify/compress registered globally, streams are neither compressed nor held back', async (t) => {
  const { app } = await makeApp()
  await app.register(compress, { global: true, threshold: 0 })
  app.get('/events', (_req, reply) => {
    reply.sse({ topics: ['c'] })
  })
  app.get('/page', (_req, reply) => {
    reply.type('text/html').send(`<p>${'compress me '.repeat(200)}</p>`)
  })
  const base = await listen(app)
  t.teardown(() => app.close())

  const page = await fetch(`${base}/page`, { headers: { 'accept-encoding': 'gzip' } })
  t.equal(page.headers.get('content-encoding'), 'gzip', 'the plugin does compress other routes')

  let body = ''
  const res = await new Promise<import('node:http').IncomingMessage>((resolve) => {
    request(`${base}/events`, { agent: false, headers: { 'accept-encoding': 'gzip, deflate, br' } }, resolve).end()
  })
  res.setEncoding('utf8')
  res.on('data', (chunk: string) => {
    body += chunk
  })
  t.equal(res.headers['content-encoding'], undefined, 'no content-encoding on the stream')
  await until(() => app.sse.stats().topics.c === 1)
  await app.sse.publish('c', '<p>first</p>')
  await until(() => parseAll(body).length === 1, 2000, 'the first event before the stream ends')
  t.equal(parseAll(body)[0]?.data, '<p>first</p>')
  res.destroy()
})
