/**
 * `fastify-html-sse/postgres`: the Postgres broker for several instances, with
 * publishes inside the app's transactions. The parts live in `./postgres/`;
 * this entry re-exports the public surface.
 */
export type { PostgresBroker } from './postgres/broker.js'
export { postgresBroker } from './postgres/broker.js'
export type {
  PgPool,
  PgPoolClient,
  PgResult,
  PostgresBrokerLogger,
  PostgresBrokerOptions
} from './postgres/options.js'
