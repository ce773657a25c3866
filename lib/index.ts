export { DEFAULT_ASSETS_PREFIX } from './assets.js'
export { type MemoryBrokerOptions, memoryBroker } from './broker/memory.js'
export type {
  Broker,
  BrokerEvent,
  BrokerGapListener,
  BrokerLastIdOptions,
  BrokerListener,
  BrokerLogger,
  BrokerPublishOptions,
  BrokerReplay,
  Presence,
  PresenceShare,
  TransactionClient
} from './broker/types.js'
export { CONTROL_TOPIC, compareIds, parseId, withId } from './broker/types.js'
export type { DisconnectFilter } from './control.js'
export type { SseStats } from './counters.js'
export * from './errors.js'
export { type Html, type SseMessageOptions, sseComment, sseMessage } from './frame.js'
export {
  default,
  fastifyHtmlSse,
  type HtmlSseOptions,
  type LastIdOptions,
  type PublishOptions,
  type SseHub,
  type SseReplyOptions
} from './plugin.js'
export {
  CLOSE_REASONS,
  type CloseReason,
  type SseItem,
  type SseSink,
  type SseSource,
  type SseSourceFactory
} from './types.js'
