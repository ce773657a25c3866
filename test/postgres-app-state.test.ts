/**
 * App state through the Postgres broker: the app-state suite (presence,
 * revocation and keyed events across two or three app instances, one of them
 * SIGKILLed in a child process) on tables of a private database, counting the
 * statements of pools that record them; and what only a transactional broker
 * has: a keyed publish in a transaction that rolls back.
 */
import pg from 'pg'
import t, { type Test } from 'tap'
import { resolveOptions } from '../lib/broker/postgres/options.js'
import { statements } from '../lib/broker/postgres/schema.js'
import { postgresBroker } from '../lib/broker/postgres.js'
import type { Broker } from '../lib/index.js'
import { stateChild, stateInstance } from './helpers/app-state.js'
import { appStateSuite } from './helpers/app-state-suite.js'
import { inTransaction, privateDatabase, recordingPool, uniqueTable } from './helpers/postgres.js'
import { connect, until } from './helpers/sse.js'

const db = await privateDatabase(t)
const url = db.url

const admin = new pg.Pool({ connectionString: url, max: 3 })
// DROP DATABASE ... WITH (FORCE) at teardown ends its idle connections.
admin.on('error', () => {})
t.teardown(() => admin.end())

/** An instance on a broker of its own connections. */
const instance = (t: Test, table: string) => stateInstance(t, postgresBroker({ connectionString: url, table }))
/** The statements of the broker's own, by the names the suite counts them by. */
const STATEMENTS = { 'share statement': 'share', 'presence query': 'presence', 'range query': 'range' } as const
/** What the recording pools of each table's counted instances ran, and with what parameters. */
const recorded = new Map<string, Array<{ texts: string[]; values: unknown[][] }>>()
/** The parameters of every statement `name` the counted instances of `table` ran. */
function ranWith(table: string, name: keyof typeof STATEMENTS): unknown[][] {
  const text = statements(resolveOptions({ table }))[STATEMENTS[name]]
  return (recorded.get(table) ?? []).flatMap(({ texts, values }) =>
    texts.flatMap((sent, i) => (sent === text ? [values[i] ?? []] : []))
  )
}

appStateSuite(t, {
  name: 'Postgres',
  space: uniqueTable,
  async instance(t, table, { counted = false, wrap = (broker: Broker) => broker } = {}) {
    if (!counted) return stateInstance(t, wrap(postgresBroker({ connectionString: url, table })))
    const { pool, texts, values } = recordingPool(t, url)
    recorded.set(table, [...(recorded.get(table) ?? []), { texts, values }])
    return stateInstance(t, wrap(postgresBroker({ pool, table })))
  },
  child: (t, table) => stateChild(t, 'postgres', url, table),
  operations: {
    share: 'share statement',
    renew: 'share statement',
    work: 'statements',
    presence: [{ name: 'presence query' }],
    range: 'range query'
  },
  ran: async (table, name) => ranWith(table, name as keyof typeof STATEMENTS).length,
  // Each share statement writes the rows of the topics in its $2.
  topicsShared: async (table) =>
    ranWith(table, 'share statement').reduce((sum: number, [, rows]) => sum + JSON.parse(String(rows)).length, 0),
  presenceWork: async (table) => ranWith(table, 'share statement').length + ranWith(table, 'presence query').length,
  async forgetPresence(table) {
    await admin.query(`DELETE FROM "${table}_presence"`)
    await admin.query(`DELETE FROM "${table}_presence_live"`)
  },
  emptyLogId: /^\d+-0$/,
  latencyRounds: 50,
  async nothingLeftOf(t, table, topic) {
    const rows = await admin.query(`SELECT count(*)::int AS n FROM "${table}_presence" WHERE topic = $1`, [topic])
    t.equal(rows.rows[0].n, 0, 'a topic nobody holds leaves no row behind')
  },
  async afterDisconnects(t, table, count) {
    const control = await admin.query(`SELECT count(*)::int AS n FROM "${table}" WHERE topic = ''`)
    t.equal(control.rows[0].n, count, `the ${count} disconnects are control rows (topic empty) of the log`)
  }
})

t.test('a keyed publish in a transaction that rolls back sends nothing', async (t) => {
  const table = uniqueTable()
  const a = await instance(t, table)
  const b = await instance(t, table)
  const onB = await connect(`${b.base}/events`)
  await until(() => b.app.sse.stats().connections === 1)
  const first = await a.app.sse.publish('room', '<p>first</p>', 'message', { key: 'k' })
  const rolledBack = await inTransaction(
    admin,
    (client) => a.app.sse.publish('room', '<p>rolled back</p>', 'message', { key: 'k', transaction: client }),
    { rollback: true }
  )
  const marker = await a.app.sse.publish('room', '<p>marker</p>')
  await until(() => onB.events.at(-1)?.id === marker, 5000, 'the marker on B')
  t.same(
    onB.events.map((e) => [e.id, e.data]),
    [
      [first, '<p>first</p>'],
      [marker, '<p>marker</p>']
    ],
    'the live client got the committed keyed event and the marker, not the rolled-back one'
  )
  onB.close()
  const resumed = await connect(`${b.base}/events`, { 'last-event-id': first })
  await until(() => resumed.events.at(-1)?.id === marker, 5000, 'the resume')
  t.same(
    resumed.events.map((e) => e.data),
    ['<p>marker</p>'],
    'a resume after the first keyed event: only the marker'
  )
  resumed.close()
  const rows = await admin.query(`SELECT id::text FROM "${table}" WHERE key = 'k' ORDER BY id`)
  t.same(
    rows.rows.map((r) => `${first.slice(0, first.indexOf('-'))}-${r.id}`),
    [first],
    `only the committed keyed row is in the table (${rolledBack} never is)`
  )
})
