/**
 * Every error this package throws, in one place. Each has a stable `code`
 * (`FST_ERR_HTML_SSE_*`), names the package and says how to fix the call.
 * Built with `@fastify/error`, so `instanceof TypeError` / `RangeError` hold
 * where the class says so.
 */
import createError from '@fastify/error'

const P = 'fastify-html-sse:'

/** `event` is empty or not a string. */
export const FST_ERR_HTML_SSE_EVENT_EMPTY = createError<[]>(
  'FST_ERR_HTML_SSE_EVENT_EMPTY',
  `${P} the event name must be a non-empty string; omit it to send a "message" event`,
  500,
  TypeError
)

/** `event` holds CR or LF: it would end the field and start another. */
export const FST_ERR_HTML_SSE_EVENT_NEWLINE = createError<[]>(
  'FST_ERR_HTML_SSE_EVENT_NEWLINE',
  `${P} the event name must not contain CR or LF; it would inject fields into the stream`,
  500,
  TypeError
)

/** `id` is not a string, or holds CR, LF or NUL. */
export const FST_ERR_HTML_SSE_ID_INVALID = createError<[]>(
  'FST_ERR_HTML_SSE_ID_INVALID',
  `${P} the event id must be a string without CR, LF or U+0000 (a browser ignores such ids and the frame could inject fields)`,
  500,
  TypeError
)

/** `retry` is not a non-negative safe integer. */
export const FST_ERR_HTML_SSE_RETRY_INVALID = createError<[unknown]>(
  'FST_ERR_HTML_SSE_RETRY_INVALID',
  `${P} retry must be a non-negative safe integer of milliseconds, got %s`,
  500,
  RangeError
)

/** `html` is neither a string nor a promise of one. */
export const FST_ERR_HTML_SSE_HTML_INVALID = createError<[string]>(
  'FST_ERR_HTML_SSE_HTML_INVALID',
  `${P} html must be a string, a JSX.Element of @kitajs/html or a Promise<string>, got %s`,
  500,
  TypeError
)

/** A source yielded something that is not a frame, HTML or `{ html }`. */
export const FST_ERR_HTML_SSE_ITEM_INVALID = createError<[string]>(
  'FST_ERR_HTML_SSE_ITEM_INVALID',
  `${P} a source item must be a frame string, an HTML string or JSX.Element, or { html, event?, id?, retry? }; got %s`,
  500,
  TypeError
)

/** `reply.sse()` was given something that is neither a source nor options. */
export const FST_ERR_HTML_SSE_SOURCE_INVALID = createError<[string]>(
  'FST_ERR_HTML_SSE_SOURCE_INVALID',
  `${P} reply.sse(source?, options?) takes an Iterable or AsyncIterable (not a string), got %s`,
  500,
  TypeError
)

/** A topic name is not a non-empty string. */
export const FST_ERR_HTML_SSE_TOPIC_INVALID = createError<[string]>(
  'FST_ERR_HTML_SSE_TOPIC_INVALID',
  `${P} a topic must be a non-empty, well-formed string, got %s`,
  500,
  TypeError
)

/** A plugin option is out of range or of the wrong type. */
export const FST_ERR_HTML_SSE_OPTION_INVALID = createError<[string, string]>(
  'FST_ERR_HTML_SSE_OPTION_INVALID',
  `${P} option %s %s`,
  500,
  TypeError
)

/** The plugin was registered twice on one server (for example in two sibling contexts). */
export const FST_ERR_HTML_SSE_REGISTERED_TWICE = createError<[]>(
  'FST_ERR_HTML_SSE_REGISTERED_TWICE',
  `${P} the plugin is already registered on this server; register it once, at the root (it is wrapped in fastify-plugin, so every context sees reply.sse() and app.sse)`,
  500
)

/** `publish()` was given an `id`: ids come from the broker's sequence. */
export const FST_ERR_HTML_SSE_PUBLISH_ID = createError<[]>(
  'FST_ERR_HTML_SSE_PUBLISH_ID',
  `${P} publish() assigns event ids itself (one sequence per broker, so Last-Event-ID resumes exactly); remove options.id`,
  500,
  TypeError
)

/** `publish()` or `lastId()` got a `transaction` the broker cannot honour. */
export const FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED = createError<[string]>(
  'FST_ERR_HTML_SSE_TRANSACTION_UNSUPPORTED',
  `${P} %s`,
  500,
  TypeError
)

/** The broker is closed or cannot reach its backend. */
export const FST_ERR_HTML_SSE_BROKER_UNAVAILABLE = createError<[string]>(
  'FST_ERR_HTML_SSE_BROKER_UNAVAILABLE',
  `${P} the broker is unavailable: %s`,
  503
)

/** A component got props that cannot work with the chosen htmx line. */
export const FST_ERR_HTML_SSE_COMPONENT_PROPS = createError<[string]>(
  'FST_ERR_HTML_SSE_COMPONENT_PROPS',
  `${P} %s`,
  500,
  TypeError
)

/** `collectEvents()` or a test client's `waitFor()` did not see enough events in time (or the stream ended first). */
export const FST_ERR_HTML_SSE_COLLECT_TIMEOUT = createError<[number, number, string, number]>(
  'FST_ERR_HTML_SSE_COLLECT_TIMEOUT',
  `${P} saw %s of %s events from %s before the stream ended or %sms passed`,
  500
)

/** `collectEvents()` or a test client's `waitFor()` got a response that is not an event stream. */
export const FST_ERR_HTML_SSE_COLLECT_RESPONSE = createError<[string, number, string]>(
  'FST_ERR_HTML_SSE_COLLECT_RESPONSE',
  `${P} expected a text/event-stream from %s, got status %s with content-type %s`,
  500
)
