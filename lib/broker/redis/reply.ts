/**
 * Decoding of the stream replies the broker reads. node-redis answers raw
 * commands in the shape of the connection's protocol and type mapping: arrays
 * (RESP2), maps or plain objects (RESP3), strings or Buffers. These functions
 * accept all of them and return plain values.
 */
import type { BrokerEvent } from '../types.js'
import { brokerEvent } from '../types.js'

/** One stream entry: its id and its flat `[field, value, ...]` list. */
export type Entry = [id: string, fields: unknown[]]

/** What `XINFO STREAM` says about the log, reduced to what gap detection needs. */
export interface StreamInfo {
  /** Entries in the stream now. */
  readonly length: number
  /** Every entry ever added (Redis >= 7), trimmed ones included. */
  readonly entriesAdded: number
  /** The id of the newest entry ever added: the head, even when it was trimmed. */
  readonly lastGenerated: string
  /** The oldest entry still in the stream, or null when it is empty. */
  readonly first: string | null
}

/** A string from a string or Buffer reply; undefined otherwise. */
export function text(value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (Buffer.isBuffer(value)) return value.toString()
  return undefined
}

/** The entries of an `XRANGE` / `XREVRANGE` reply. */
export function entriesOf(reply: unknown): Entry[] {
  const entries: Entry[] = []
  if (!Array.isArray(reply)) return entries
  for (const item of reply) {
    if (!Array.isArray(item)) continue
    const id = text(item[0])
    if (id !== undefined) entries.push([id, Array.isArray(item[1]) ? item[1] : []])
  }
  return entries
}

/** The entries of an `XREAD` reply on one key: `null`, `[[key, entries]]` (RESP2) or `{ key: entries }` (RESP3). */
export function entriesOfRead(reply: unknown): Entry[] {
  if (reply === null || typeof reply !== 'object') return []
  if (Array.isArray(reply)) return entriesOf((reply[0] as unknown[] | undefined)?.[1])
  if (reply instanceof Map) return entriesOf(reply.values().next().value)
  return entriesOf(Object.values(reply)[0])
}

/**
 * The event an entry holds: the topic (`t`), the frame's body (`b`) and, for a
 * keyed event, its key (`k`); undefined for an entry the broker did not write.
 * Every event the broker produces (live, from the window, from `XRANGE`) is
 * decoded here.
 */
export function eventOf(id: string, fields: unknown[]): BrokerEvent | undefined {
  let topic: string | undefined
  let body: string | undefined
  let key: string | undefined
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = text(fields[i])
    if (name === 't') topic = text(fields[i + 1])
    else if (name === 'b') body = text(fields[i + 1])
    else if (name === 'k') key = text(fields[i + 1])
  }
  if (topic === undefined || body === undefined) return undefined
  return brokerEvent(id, topic, body, key)
}

/** The pairs of a RESP2 flat array, a RESP3 map or an object, as a Map with string keys. */
export function pairs(reply: unknown): Map<string, unknown> {
  const out = new Map<string, unknown>()
  if (reply instanceof Map) {
    for (const [k, v] of reply) out.set(text(k) ?? String(k), v)
  } else if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) out.set(text(reply[i]) ?? String(reply[i]), reply[i + 1])
  } else if (reply !== null && typeof reply === 'object') {
    for (const [k, v] of Object.entries(reply)) out.set(k, v)
  }
  return out
}

/** A number, or one as text (a string or a Buffer); NaN for anything else (null: none). */
export function integer(value: unknown): number {
  if (typeof value === 'number') return value
  const s = text(value)
  return s === undefined ? Number.NaN : Number(s)
}

/** Redis `TIME` (seconds and microseconds) as epoch ms; NaN when it is not that. */
export function msOfTime(reply: unknown): number {
  if (!Array.isArray(reply)) return Number.NaN
  return integer(reply[0]) * 1000 + Math.floor(integer(reply[1]) / 1000)
}

/** A `ZRANGE ... WITHSCORES` reply, flat (RESP2) or of `[member, score]` pairs (RESP3), as a Map. */
export function scores(reply: unknown): Map<string, number> {
  const out = new Map<string, number>()
  if (Array.isArray(reply) && reply.some(Array.isArray)) {
    for (const pair of reply) if (Array.isArray(pair)) out.set(text(pair[0]) ?? String(pair[0]), integer(pair[1]))
  } else {
    for (const [member, score] of pairs(reply)) out.set(member, integer(score))
  }
  return out
}

/** Decodes `XINFO STREAM <key>`; throws when the reply lacks what Redis 7 sends. */
export function streamInfoOf(reply: unknown): StreamInfo {
  const info = pairs(reply)
  const length = integer(info.get('length'))
  const entriesAdded = integer(info.get('entries-added'))
  const lastGenerated = text(info.get('last-generated-id'))
  if (!Number.isSafeInteger(length) || !Number.isSafeInteger(entriesAdded) || lastGenerated === undefined) {
    throw new Error(
      'XINFO STREAM did not report length, entries-added and last-generated-id (Redis 7 or later is required)'
    )
  }
  const firstEntry = info.get('first-entry')
  const first = Array.isArray(firstEntry) ? (text(firstEntry[0]) ?? null) : null
  return { length, entriesAdded, lastGenerated, first }
}
