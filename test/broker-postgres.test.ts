import pg from 'pg'
import t from 'tap'
import { postgresBroker } from '../lib/broker/postgres.js'
import { brokerContract } from './helpers/broker-contract.js'
import { privateDatabase } from './helpers/postgres.js'

const db = await privateDatabase(t)
const tableOf = (space: string) => `c_${space.replace(/[^a-z0-9]/gi, '_')}`.slice(0, 48)

brokerContract(
  t,
  'postgresBroker({ connectionString })',
  async ({ space, replay }) =>
    postgresBroker({
      connectionString: db.url,
      table: tableOf(space),
      pollMs: 200,
      ...(replay === undefined ? {} : { replay })
    }),
  { shared: true, batches: true }
)

const pool = new pg.Pool({ connectionString: db.url, max: 6 })
// DROP DATABASE ... WITH (FORCE) at teardown ends its idle connections.
pool.on('error', () => {})
t.teardown(() => pool.end())

brokerContract(
  t,
  'postgresBroker({ pool })',
  async ({ space, replay }) =>
    postgresBroker({ pool, table: tableOf(`p${space}`), ...(replay === undefined ? {} : { replay }) }),
  { shared: true, batches: true }
)
