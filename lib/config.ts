/**
 * The plugin's options, checked and resolved once, at registration, into a
 * frozen `Config` that the rest of the plugin reads.
 */
import type { FastifyRequest } from 'fastify'
import { DEFAULT_ASSETS_PREFIX } from './assets.js'
import { memoryBroker } from './broker/memory.js'
import type { Broker } from './broker/types.js'
import { FST_ERR_HTML_SSE_OPTION_INVALID } from './errors.js'
import { checkBroker, checkInteger, checkLimit, checkMs, checkReplay } from './validate.js'

/** Options of the plugin. */
export interface HtmlSseOptions {
  /** A comment line (`:\n`) on each stream idle this long, in ms; 0 turns heartbeats off. @default 15000 */
  heartbeatMs?: number | undefined
  /** Sends `retry:` with this many ms when a stream opens. @default undefined */
  retryMs?: number | undefined
  /** How many recent events the default broker keeps for `Last-Event-ID` resume; 0 keeps none. @default 1000 */
  replay?: number | undefined
  /**
   * A stream whose unsent bytes pass this while its client is not reading is
   * closed; its browser reconnects and resumes. A client that keeps reading is
   * never shed. @default 1048576
   */
  maxBufferedBytes?: number | undefined
  /** Where published events travel. @default memoryBroker({ replay }) */
  broker?: Broker | undefined
  /** Where the htmx client files are served; `false` serves none. @default '/fastify-html-sse/' */
  assetsPrefix?: string | false | undefined
  /**
   * The most open streams on this instance; past it a refused event-stream
   * client is told to retry in a few seconds, others get 503. @default Infinity
   */
  maxConnections?: number | undefined
  /** The most open streams per `clientKey(request)`; past it as above, or 429. @default Infinity */
  maxConnectionsPerClient?: number | undefined
  /** What counts as one client for `maxConnectionsPerClient`. @default (request) => request.ip */
  clientKey?: ((request: FastifyRequest) => string) | undefined
  /**
   * A stream with topics ends after a random time between 0.9x and 1x this,
   * after a `retry:` hint; its client reconnects and resumes exactly. 0: never.
   * @default 0
   */
  maxLifetimeMs?: number | undefined
  /**
   * On `app.close()` every stream gets a `retry:` hint drawn uniformly from
   * `[0, drainMs]`, then ends, so browsers reconnect spread over the window.
   * @default 5000
   */
  drainMs?: number | undefined
  /**
   * A stream whose socket accepts no bytes for this long while bytes wait is
   * dropped (half-open or stalled connections); 0: never. @default 30000
   */
  writeTimeoutMs?: number | undefined
}

/** The options, checked, with their defaults. */
export interface Config {
  readonly heartbeatMs: number
  readonly retryMs: number | undefined
  readonly maxBufferedBytes: number
  readonly broker: Broker
  /** The plugin made the broker (no `broker` option). */
  readonly ownBroker: boolean
  readonly assetsPrefix: string | false
  readonly maxConnections: number
  readonly maxConnectionsPerClient: number
  readonly clientKey: (request: FastifyRequest) => string
  readonly maxLifetimeMs: number
  readonly drainMs: number
  readonly writeTimeoutMs: number
}

const defaultClientKey = (request: FastifyRequest): string => request.ip

/** Checks every option (a coded error names the first one wrong) and freezes the result. */
export function resolveConfig(options: HtmlSseOptions): Readonly<Config> {
  const replay = checkReplay(options.replay ?? 1000)
  const assetsPrefix = options.assetsPrefix ?? DEFAULT_ASSETS_PREFIX
  if (assetsPrefix !== false && (typeof assetsPrefix !== 'string' || !/^\/(.*\/)?$/.test(assetsPrefix))) {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('assetsPrefix', 'must be false or a path that starts and ends with "/"')
  }
  const clientKey = options.clientKey ?? defaultClientKey
  if (typeof clientKey !== 'function') {
    throw new FST_ERR_HTML_SSE_OPTION_INVALID('clientKey', 'must be a function of the request returning a string')
  }
  const config: Omit<Config, 'broker' | 'ownBroker'> = {
    heartbeatMs: checkMs('heartbeatMs', options.heartbeatMs ?? 15_000),
    retryMs: options.retryMs === undefined ? undefined : checkInteger('retryMs', options.retryMs, 0),
    maxBufferedBytes: checkInteger('maxBufferedBytes', options.maxBufferedBytes ?? 1024 * 1024, 1),
    assetsPrefix,
    maxConnections: checkLimit('maxConnections', options.maxConnections),
    maxConnectionsPerClient: checkLimit('maxConnectionsPerClient', options.maxConnectionsPerClient),
    clientKey,
    maxLifetimeMs: checkMs('maxLifetimeMs', options.maxLifetimeMs ?? 0),
    drainMs: checkMs('drainMs', options.drainMs ?? 5000),
    writeTimeoutMs: checkMs('writeTimeoutMs', options.writeTimeoutMs ?? 30_000)
  }
  // The broker last: a default one is made only once every other option is right.
  const ownBroker = options.broker === undefined
  const broker = ownBroker ? memoryBroker({ replay }) : checkBroker(options.broker)
  return Object.freeze({ ...config, broker, ownBroker })
}
