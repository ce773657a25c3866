export { HtmxScripts, type HtmxScriptsProps } from './htmx-scripts.js'
export { SseSource, type SseSourceProps } from './sse-source.js'
