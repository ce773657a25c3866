/**
 * `fastify-html-sse/redis`: the Redis broker for several instances. The parts
 * live in `./redis/`; this entry re-exports the public surface.
 */
export type { RedisBroker } from './redis/broker.js'
export { redisBroker } from './redis/broker.js'
export type { RedisBrokerLogger, RedisBrokerOptions, RedisClient } from './redis/options.js'
