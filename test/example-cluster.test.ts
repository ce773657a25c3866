/**
 * The cluster example: two instances of the example sharing a private Redis.
 * A note posted on one reaches the tabs of both, also a tab whose page was
 * rendered before the note and whose stream opened after it; a job run on one
 * is watched on the other; the open-tab count and "sign out everywhere" span
 * both.
 *
 * The example imports the package by name, which resolves to dist/: `npm test`
 * builds first; run `npm run build` before running this file alone.
 */
import { redisBroker } from 'fastify-html-sse/redis'
import { test } from 'tap'
import { closeAll, examplePair, note, notesReachBoth } from './helpers/example.js'
import { privateRedis } from './helpers/redis.js'
import { connect, until } from './helpers/sse.js'

test('two example instances on Redis: notes and jobs reach the tabs of both', async (t) => {
  const redis = await privateRedis(t)
  const pair = await examplePair(t, async () => ({ broker: redisBroker({ url: redis.url, prefix: 'example:' }) }))
  const { a, b, baseA, baseB } = pair
  const { tabA, tabB, late } = await notesReachBoth(t, pair)

  t.equal((await fetch(`${baseA}/jobs`, { method: 'POST' })).status, 204)
  const jobOnB = await connect(`${baseB}/jobs/1/events`)
  await until(() => jobOnB.events.some((e) => e.event === 'done'), 10_000, 'job 1 (run on A) to finish on B')
  t.ok(
    jobOnB.events.some((e) => e.data.includes('Done in')),
    'B saw the job reach 100%'
  )
  // The open-tab count is presence across both instances: A's page counts B's tabs too.
  await until(
    async () => (await (await fetch(`${baseA}/`)).text()).includes('>3 open tabs<'),
    5000,
    'three tabs (two on B) on the page of A'
  )
  await until(() => tabA.events.some((e) => e.data.includes('3 open tabs')), 5000, 'the count on the tab of A')

  // Sign out everywhere: this browser's tabs on both instances get `revoked` and end.
  const cookie = 'example_member=00000000-0000-4000-8000-000000000001'
  const mineA = await connect(`${baseA}/live`, { cookie })
  const mineB = await connect(`${baseB}/live?htmx=4`, { cookie })
  await until(() => a.sse.stats().topics.notes === 2 && b.sse.stats().topics.notes === 3, 5000, 'the two new tabs')
  t.equal((await fetch(`${baseB}/signout`, { method: 'POST', headers: { cookie } })).status, 204)
  await mineA.ended
  await mineB.ended
  t.ok(
    [mineA, mineB].every((tab) => tab.events.at(-1)?.event === 'revoked'),
    'both tabs of the browser got revoked, then the end'
  )
  t.equal((await fetch(`${baseA}/notes`, note('after sign-out'))).status, 200)
  await until(() => tabB.events.some((e) => e.data.includes('after sign-out')), 5000, 'the other tabs go on')

  await closeAll(pair, [tabA, tabB, late, jobOnB])
})
