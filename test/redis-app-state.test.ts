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
import { commandCalls, privateRedis, uniquePrefix } from './helpers/redis.js'
import { until } from './helpers/sse.js'

const redis = await privateRedis(t)
const url = redis.url

const admin = createClient({ url })
admin.on('error', () => {})
await admin.connect()
t.teardown(() => admin.destroy())

/** Server-wide calls of each command (the tests of a file run one at a time): every instance counts. */
async function calls(commands: readonly string[]): Promise<number> {
  return (await commandCalls(admin, ...commands)).calls
}

/** Every command presence sends: shares and renewals, the sweep, reads. */
const PRESENCE_COMMANDS = ['HSET', 'SADD', 'HDEL', 'SREM', 'ZSCORE', 'ZADD', 'ZRANGEBYSCORE', 'TIME', 'EVAL']
PRESENCE_COMMANDS.push('HGETALL', 'ZRANGE')

appStateSuite(t, {
  name: 'Redis',
  space: uniquePrefix,
  instance: (t, prefix, options) => {
    const broker = redisBroker({ url, prefix })
    return stateInstance(t, options?.wrap?.(broker) ?? broker)
  },
  child: (t, prefix) => stateChild(t, 'redis', url, prefix),
  // TIME also rides in the instances' own shares: at least one per presence() call.
  operations: {
    share: 'HSET',
    renew: 'ZADD',
    work: 'commands',
    presence: [{ name: 'HGETALL' }, { name: 'ZRANGE' }, { name: 'TIME', atLeast: true }],
    range: 'XRANGE'
  },
  ran: (_prefix, command) => calls([command]),
  topicsShared: () => calls(['HSET', 'HDEL']),
  presenceWork: () => calls(PRESENCE_COMMANDS),
  async forgetPresence(prefix) {
    const keys = await admin.keys(`${prefix}presence*`)
    if (keys.length > 0) await admin.del(keys)
  },
  async afterKill(t, prefix, topic) {
    // The reads deleted the killed instance's field; a renewal of the living one swept the rest.
    await until(
      async () =>
        (await admin.hLen(`${prefix}presence:${topic}`)) === 1 &&
        (await admin.zCard(`${prefix}presence-instances`)) === 1 &&
        (await admin.keys(`${prefix}presence-topics:*`)).length === 1,
      10_000,
      "the killed instance's keys to go"
    )
    t.pass('nothing of the killed instance is left: its field, its member of the instances, its topic set')
  },
  emptyLogId: /^0-0$/,
  latencyRounds: 100,
  async nothingLeftOf(t, prefix, topic) {
    t.equal(await admin.exists(`${prefix}presence:${topic}`), 0, 'a topic nobody holds leaves no key behind')
  }
})
