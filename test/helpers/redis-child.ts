/**
 * One app instance of `redisApp` in a child process, driven by its parent
 * (`childInstance` in `redis.ts`) over IPC:
 * `node --import <ts loader> test/helpers/redis-child.ts <url> <prefix> <options as JSON>`.
 */
import { type FromChild, type RedisAppOptions, redisApp, type ToChild } from './redis.js'

const [url, prefix, json] = process.argv.slice(2)
const options = JSON.parse(json ?? '{}') as RedisAppOptions
const send = (message: FromChild) => process.send?.(message)
const { app, base } = await redisApp(url as string, prefix as string, undefined, options)
process.on('message', (message: ToChild) => {
  if ('close' in message) {
    void app.close().then(() => process.disconnect())
  } else if ('block' in message) {
    send({ blocked: message.block })
    // Let the answer leave before the loop stops turning.
    setImmediate(() => {
      const end = performance.now() + message.block
      while (performance.now() < end) {}
    })
  } else if ('stats' in message) {
    const { connections, dropped } = app.sse.stats()
    send({ stats: { connections, dropped } })
  } else {
    app.sse.publish(message.publish.topic, message.publish.html).then(
      (id) => send({ id }),
      (err: Error) => send({ error: err.message })
    )
  }
})
// The parent going away ends this instance too.
process.on('disconnect', () => {
  void app.close().then(() => process.exit(0))
})
send({ base })
