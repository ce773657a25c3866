/**
 * What differs between the htmx 2 page (`/`) and the htmx 4 page (`/?htmx=4`),
 * in one place. The streams carry the same frames to both: every update is an
 * unnamed message of `<Partial>`s, which both lines swap. What differs is how a
 * page connects (`<HtmxScripts>` and `<SseSource>` take the line) and how a
 * named event such as `reset` reaches it.
 */

/** Which htmx a page loads. */
export type Htmx = 2 | 4

/** Both lines, for what is published once per line. */
export const HTMX_LINES: readonly Htmx[] = [2, 4]

/** `?htmx=4` serves htmx 4; anything else htmx 2. */
export function htmxOf(query: { htmx?: string }): Htmx {
  return query.htmx === '4' ? 4 : 2
}

/** The page of a line. */
export function pagePath(htmx: Htmx): string {
  return htmx === 4 ? '/?htmx=4' : '/'
}

/** What the page says it runs on. */
export function describeHtmx(htmx: Htmx): string {
  return htmx === 4 ? 'htmx 4 with hx-sse' : 'htmx 2 with htmx-ext-sse'
}

/**
 * An `hx-trigger` for the named event `event` of the stream connected by `source`
 * (a selector): htmx-ext-sse triggers `sse:<event>` on listening elements, htmx 4
 * dispatches `<event>` on the connecting element.
 */
export function onStreamEvent(htmx: Htmx, event: string, source: string): string {
  return htmx === 4 ? `${event} from:${source}` : `sse:${event}`
}
