/**
 * The cluster example: two instances of the example sharing Redis. A note
 * posted on one reaches the tabs of both; a job run on one is watched on the other.
 */
import { test } from 'tap'
import { buildApp } from '../example/app.js'
import { redisBroker } from '../lib/broker/redis.js'
import { deleteKeys, REDIS_URL, uniquePrefix } from './helpers/redis.js'
import { connect, listen, until } from './helpers/sse.js'

test('two example instances on Redis: a note posted on A reaches tabs on A and B', async (t) => {
  const prefix = uniquePrefix()
  const [a, b] = await Promise.all(
    [0, 1].map((n) =>
      buildApp({ heartbeatMs: 0, jobIdBase: n * 1000, broker: redisBroker({ url: REDIS_URL, prefix }) })
    )
  )
  if (a === undefined || b === undefined) throw new Error('two apps')
  t.teardown(async () => {
    await Promise.all([a.close(), b.close()])
    await deleteKeys([prefix])
  })
  const [baseA, baseB] = await Promise.all([listen(a), listen(b)])
  const tabA = await connect(`${baseA}/live`)
  const tabB = await connect(`${baseB}/live?htmx=4`)
  await until(() => a.sse.stats().topics.notes === 1 && b.sse.stats().topics.notes === 1)

  const posted = await fetch(`${baseA}/notes`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'text=hello%20from%20A'
  })
  t.equal(posted.status, 200)
  await until(() => tabB.events.some((e) => e.data.includes('hello from A')), 5000, 'the note on B')
  await until(() => tabA.events.some((e) => e.data.includes('hello from A')), 5000, 'the note on A')

  t.equal((await fetch(`${baseA}/jobs`, { method: 'POST' })).status, 204)
  const jobOnB = await connect(`${baseB}/jobs/1/events`)
  await until(() => jobOnB.events.some((e) => e.event === 'done'), 10_000, 'job 1 (run on A) to finish on B')
  t.ok(
    jobOnB.events.some((e) => e.data.includes('100%') || e.data.includes('Done in')),
    'B saw the job reach 100%'
  )
  for (const c of [tabA, tabB, jobOnB]) c.close()
  await until(() => a.sse.stats().connections === 0 && b.sse.stats().connections === 0)
})
