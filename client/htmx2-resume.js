/*
 * fastify-html-sse: keeps an htmx 2 page's place in its event streams.
 *
 * After an HTTP error (a 502 from a proxy during a deploy, say) an EventSource
 * gives up, and htmx-ext-sse replaces it with a new one, which sends no
 * Last-Event-ID: the page would silently miss what was published meanwhile.
 * This script remembers the last id each EventSource dispatched and, when htmx
 * is about to replace it, writes that id into the `lastEventId` query parameter
 * of the URL htmx reconnects to (`sse-connect`). While an EventSource reconnects
 * by itself it sends the Last-Event-ID header, which the server prefers.
 */
;(() => {
  /** EventSource -> the last id it dispatched ('' once an event cleared it). */
  const seen = new WeakMap()

  const remember = (event) => {
    const message = event.detail
    if (!(message instanceof MessageEvent) || !(message.target instanceof EventSource)) return
    // Before any id, lastEventId is '': keep the id the page was rendered with.
    if (message.lastEventId !== '' || seen.has(message.target)) seen.set(message.target, message.lastEventId)
  }
  document.addEventListener('htmx:sseBeforeMessage', remember)
  document.addEventListener('htmx:sseMessage', remember)

  // htmx-ext-sse fires this before it schedules the replacement, which reads `sse-connect` again.
  document.addEventListener('htmx:sseError', (event) => {
    const source = event.detail?.source
    const element = event.target
    if (!(source instanceof EventSource) || source.readyState !== EventSource.CLOSED) return
    if (!(element instanceof Element) || !seen.has(source)) return
    const name = element.hasAttribute('sse-connect') ? 'sse-connect' : 'data-sse-connect'
    const value = element.getAttribute(name)
    if (value === null) return
    const url = new URL(value, document.baseURI)
    const id = seen.get(source)
    if (id === '') url.searchParams.delete('lastEventId')
    else url.searchParams.set('lastEventId', id)
    element.setAttribute(name, url.origin === location.origin ? url.pathname + url.search + url.hash : url.href)
  })
})()
