/** Decoding Redis replies, without a server: every shape node-redis may hand over (RESP2, RESP3, Buffers). */
import { test } from 'tap'
import { entriesOf, entriesOfRead, eventOf, pairs, streamInfoOf, text } from '../lib/broker/redis/reply.js'

test('text: strings and Buffers; anything else is not text', async (t) => {
  t.equal(text('a'), 'a')
  t.equal(text(Buffer.from('b')), 'b')
  t.equal(text(42), undefined)
  t.equal(text(null), undefined)
})

test('entries of XRANGE and XREAD replies, whatever their shape', async (t) => {
  const entry = ['1-1', ['t', 'news', 'b', 'data: x\n\n']]
  t.same(entriesOf('not an array'), [])
  t.same(entriesOf([entry, 'junk', [42, []], ['2-1', 'no fields']]), [entry, ['2-1', []]])
  t.same(entriesOfRead(null), [])
  t.same(entriesOfRead('x'), [])
  t.same(entriesOfRead([['log', [entry]]]), [entry], 'RESP2')
  t.same(entriesOfRead(new Map([['log', [entry]]])), [entry], 'RESP3 map')
  t.same(entriesOfRead({ log: [entry] }), [entry], 'an object')
})

test('an entry the broker did not write is no event; a keyed one keeps its key', async (t) => {
  t.equal(eventOf('1-1', ['t', 'news']), undefined, 'no body')
  t.equal(eventOf('1-1', ['b', 'data: x\n\n']), undefined, 'no topic')
  const keyed = eventOf('1-2', [Buffer.from('t'), 'news', 'b', Buffer.from('data: x\n\n'), 'k', 'job', 'other', 'y'])
  t.same(
    { id: keyed?.id, topic: keyed?.topic, key: keyed?.key, frame: keyed?.frame.toString() },
    { id: '1-2', topic: 'news', key: 'job', frame: 'id: 1-2\ndata: x\n\n' }
  )
  t.notOk('key' in (eventOf('1-3', ['t', 'news', 'b', 'data: y\n\n']) ?? {}), 'no key, no key field')
})

test('pairs of a flat array, a map or an object; XINFO STREAM needs Redis 7 fields', async (t) => {
  t.same(
    [...pairs(['a', 1, Buffer.from('b'), 2, 3, 4])],
    [
      ['a', 1],
      ['b', 2],
      ['3', 4]
    ]
  )
  t.same(
    [
      ...pairs(
        new Map<unknown, unknown>([
          ['a', 1],
          [5, 2]
        ])
      )
    ],
    [
      ['a', 1],
      ['5', 2]
    ]
  )
  t.same([...pairs({ a: 1 })], [['a', 1]])
  t.same([...pairs(null)], [])
  const info = ['length', 2, 'entries-added', Buffer.from('5'), 'last-generated-id', '9-0', 'first-entry', ['3-0', []]]
  t.same(streamInfoOf(info), { length: 2, entriesAdded: 5, lastGenerated: '9-0', first: '3-0' })
  t.same(streamInfoOf({ length: '0', 'entries-added': 0, 'last-generated-id': '0-0', 'first-entry': null }).first, null)
  t.throws(() => streamInfoOf(['length', 2]), /Redis 7 or later/)
  t.throws(() => streamInfoOf({ length: [], 'entries-added': 1, 'last-generated-id': '1-0' }), /Redis 7 or later/)
})
