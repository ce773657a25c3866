/**
 * Messages between instances (`app.sse.disconnect()`), carried by control
 * entries: events of `CONTROL_TOPIC` in the broker's log, so every instance
 * sharing the broker reads them in order with the events, and no replay
 * returns them (no stream subscribes to that topic).
 */

/** Which streams `app.sse.disconnect()` ends: those matching every field given. */
export interface DisconnectFilter {
  member?: string | undefined
  topic?: string | undefined
}

/** A message between instances. */
export type ControlMessage = { type: 'disconnect'; filter: DisconnectFilter }

/** The body of a control entry: a frame whose one data line is the message as JSON. */
export function controlBody(message: ControlMessage): string {
  return `event: control\ndata: ${JSON.stringify(message)}\n\n`
}

/** The message of a control entry's frame, or null when it is not one. */
export function readControl(frame: Buffer): ControlMessage | null {
  const text = frame.toString()
  const at = text.indexOf('\ndata: ')
  if (at === -1) return null
  try {
    const message = JSON.parse(text.slice(at + 7, text.indexOf('\n', at + 7))) as ControlMessage
    return message?.type === 'disconnect' && typeof message.filter === 'object' && message.filter !== null
      ? message
      : null
  } catch {
    return null
  }
}
