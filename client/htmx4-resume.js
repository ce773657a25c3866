/*
 * fastify-html-sse: brings an htmx 4 page's stream back after a failed first connect.
 *
 * htmx 4's hx-sse reconnects a stream it already has (with the `retry:` hint the
 * server sent, or its backoff), but the first request of an `hx-sse:connect`
 * element goes through htmx's ordinary request path: an error status that is
 * not an event stream (a proxy's 502 during a deploy) is swapped into the page
 * like any error page, a network failure only logs `htmx:error`, and the
 * element never connects again. This script turns both into a retry of that first
 * request, after hx-sse's own reconnect delay (`htmx.config.sse.reconnectDelay`,
 * 500 ms by default, doubling up to `reconnectMaxDelay`, ±`reconnectJitter`),
 * and keeps the error answer out of the page. The request is the very one the
 * page was rendered with, `lastEventId` query included, so the page keeps its
 * place: nothing was received before a first connect succeeds.
 */
;(() => {
  /** Element -> failed first connects so far. */
  const failures = new WeakMap()

  const settings = () => {
    const sse = htmx.config.sse || {}
    const ms = (value, fallback) => {
      const parsed = value == null ? undefined : htmx.parseInterval(value)
      return typeof parsed === 'number' && parsed >= 0 ? parsed : fallback
    }
    return {
      delay: ms(sse.reconnectDelay, 500),
      max: ms(sse.reconnectMaxDelay, 60000),
      jitter: typeof sse.reconnectJitter === 'number' ? sse.reconnectJitter : 0.3,
      attempts: typeof sse.reconnectMaxAttempts === 'number' ? sse.reconnectMaxAttempts : Infinity,
      timeout: sse.connectTimeout
    }
  }

  /** The `hx-sse:connect` URL of `element`, whatever prefix and meta character the page uses. */
  const connectUrlOf = (element) => {
    const mc = htmx.config.metaCharacter || ':'
    const prefixes = ['hx-', 'data-hx-']
    if (htmx.config.prefix) prefixes.push(htmx.config.prefix, `data-${htmx.config.prefix}`)
    for (const prefix of prefixes) {
      const value = element.getAttribute(`${prefix}sse${mc}connect`)
      if (value) return value
    }
    return null
  }

  /** `url` without its query and fragment (htmx may add parameters to a GET, and drops the fragment). */
  const pathOf = (url) => {
    const { origin, pathname } = new URL(url, document.baseURI)
    return origin + pathname
  }

  /** The element, when `ctx` is the first connect of an `hx-sse:connect` element that has no stream yet. */
  const firstConnect = (ctx) => {
    const element = ctx?.sourceElement
    if (!(element instanceof Element) || element._htmx?.sse || ctx.request?.method !== 'GET') return null
    const url = connectUrlOf(element)
    return url !== null && pathOf(url) === pathOf(ctx.request.action) ? element : null
  }

  const retry = (element, url) => {
    const config = settings()
    const attempt = (failures.get(element) || 0) + 1
    failures.set(element, attempt)
    if (attempt > config.attempts) return
    let delay = Math.min(config.delay * 2 ** (attempt - 1), config.max)
    if (config.jitter > 0) delay = Math.max(0, delay + (Math.random() * 2 - 1) * delay * config.jitter)
    setTimeout(() => {
      // Removed meanwhile, or connected some other way: nothing to do.
      if (!element.isConnected || element._htmx?.sse || connectUrlOf(element) !== url) return
      const options = { source: element }
      if (config.timeout != null) options.timeout = config.timeout
      htmx.ajax('GET', url, options)
    }, delay)
  }

  const on = (name, listener) => {
    const mc = htmx.config.metaCharacter
    document.addEventListener(mc ? name.replace(/:/g, mc) : name, listener)
  }

  // An error status. hx-sse takes every event stream before this event fires,
  // so what reaches it here is an error page or the like.
  on('htmx:before:response', (event) => {
    const ctx = event.detail?.ctx
    const element = firstConnect(ctx)
    if (element === null || ctx.response?.raw?.ok !== false) return
    event.preventDefault() // no swap of the error page into the element
    ctx.response.raw.body?.cancel().catch(() => {})
    retry(element, connectUrlOf(element))
  })

  // No answer at all: the connection failed or timed out.
  on('htmx:error', (event) => {
    const ctx = event.detail?.ctx
    const element = firstConnect(ctx)
    if (element === null || ctx.response !== undefined) return
    retry(element, connectUrlOf(element))
  })

  // A stream that opened starts counting again.
  on('htmx:sse:after:connection', (event) => {
    if (event.target instanceof Element) failures.delete(event.target)
  })
})()
