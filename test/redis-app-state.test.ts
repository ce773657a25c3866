/**
 * App state through Redis: the app-state suite (presence, revocation and keyed
 * events across two or three app instances, one of them SIGKILLed in a child
 * process) on a private `redis-server`, counting commands with INFO
 * commandstats.
 */
import { createClient } from 'redis'
import t from 'tap'
import { redisBroker } from '../lib/broker/redis.js'
import { stateChild, stateInstance } from './helpers/app-state.js'
import { appStateSuite } from './helpers/app-state-suite.js'
import { privateRedis, uniquePrefix } from './helpers/redis.js'

const redis = await privateRedis(t)
const url = redis.url

const admin = createClient({ url })
admin.on('error', () => {})
await admin.connect()
t.teardown(() => admin.destroy())

appStateSuite(t, {
  name: 'Redis',
  space: uniquePrefix,
  instance: (t, prefix) => stateInstance(t, redisBroker({ url, prefix })),
  child: (t, prefix) => stateChild(t, 'redis', url, prefix),
  // TIME also rides in the instances' own shares: at least one per presence() call.
  operations: { share: 'HSET', presence: [{ name: 'HGETALL' }, { name: 'TIME', atLeast: true }], range: 'XRANGE' },
  // Server-wide (the tests of a file run one at a time): every instance counts.
  async ran(_prefix, command) {
    const info = String(await admin.sendCommand(['INFO', 'commandstats']))
    return Number(new RegExp(`cmdstat_${command.toLowerCase()}:calls=(\\d+)`).exec(info)?.[1] ?? 0)
  },
  emptyLogId: /^0-0$/,
  latencyRounds: 100,
  async nothingLeftOf(t, prefix, topic) {
    t.equal(await admin.exists(`${prefix}presence:${topic}`), 0, 'a topic nobody holds leaves no key behind')
  }
})
