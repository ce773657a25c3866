export { HtmxScripts, type HtmxScriptsProps } from './htmx-scripts.js'
export { Partial, type PartialProps } from './partial.js'
export { SseSource, type SseSourceProps } from './sse-source.js'
