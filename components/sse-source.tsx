import type { PropsWithChildren } from '@kitajs/html'
import { FST_ERR_HTML_SSE_COMPONENT_PROPS } from '../lib/errors.js'

/** Props of `<SseSource>`. Other attributes pass through to the element. */
export type SseSourceProps = PropsWithChildren<
  {
    /** The event stream's URL. */
    url: string
    /**
     * htmx 2: the event(s) swapped into this element (`sse-swap`). `false`: the
     * element swaps nothing itself, and each `message` applies only the
     * `<Partial>`s (and out-of-band swaps) it carries, wherever they point: one
     * stream per tab. It renders `hx-swap="none"` (htmx 2 also gets
     * `sse-swap="message"` and `hx-disinherit="hx-swap"`, so the children do not
     * inherit `none`), so it cannot be combined with your own `hx-swap`.
     * htmx 4 swaps unnamed events itself, so this must be `message` or `false` there.
     * @default 'message'
     */
    swap?: string | false | undefined
    /** Closes the connection when this event arrives (`sse-close` / `hx-sse:close`). */
    close?: string | undefined
    /** Which htmx line the page loads. @default 2 */
    htmx?: 2 | 4 | undefined
    /**
     * Where the stream's first connection resumes: the id the page's state was
     * rendered at (`await app.sse.lastId()`), so nothing published between
     * rendering and connecting is lost. Sent as the `lastEventId` query parameter;
     * on later reconnects the `Last-Event-ID` header, which is newer, wins.
     * `null` or `undefined` (an empty log) adds nothing.
     */
    lastEventId?: string | null | undefined
  } & JSX.HtmlTag
>

/**
 * An element connected to an event stream; htmx swaps events into it.
 *
 * - htmx 2 (with `htmx-ext-sse`): `hx-ext="sse"`, `sse-connect`, `sse-swap`, `sse-close`.
 *   Named events swap through `sse-swap`; any event also triggers `sse:<event>` on children.
 * - htmx 4 (with `hx-sse`): `hx-sse:connect`, `hx-sse:close`. Unnamed (`message`) events
 *   swap; named events are dispatched as DOM events of that name.
 *
 * @example
 * ```tsx
 * <SseSource url="/events" swap="message" id="clock">waiting…</SseSource>
 * // Take the id first, then read the state: nothing published in between is lost
 * // (an item may come twice, so swap whole lists or keyed items):
 * const lastEventId = await app.sse.lastId()
 * const notes = await loadNotes()
 * <SseSource url="/notes/events" lastEventId={lastEventId}>
 *   <NoteList notes={notes} />
 * </SseSource>
 * ```
 */
export function SseSource(props: SseSourceProps): JSX.Element {
  const { url: base, swap = 'message', close, htmx = 2, lastEventId, children, ...rest } = props
  const url = withLastEventId(base, lastEventId)
  if (swap === false && rest['hx-swap'] !== undefined) {
    throw new FST_ERR_HTML_SSE_COMPONENT_PROPS(
      'swap={false} renders hx-swap="none" (the element swaps nothing itself); leave hx-swap out, or set swap to "message" to swap events in with your hx-swap'
    )
  }
  if (htmx === 4) {
    if (swap !== 'message' && swap !== false) {
      throw new FST_ERR_HTML_SSE_COMPONENT_PROPS(
        `htmx 4 swaps only unnamed events: <SseSource htmx={4}> cannot swap "${swap}"; send it as "message" or listen for the "${swap}" DOM event`
      )
    }
    const attrs: Record<string, string> = { 'hx-sse:connect': url }
    if (close !== undefined) attrs['hx-sse:close'] = close
    // htmx 4 applies a message's partials, then swaps the rest into the element: `none` keeps only the partials.
    // Attributes are not inherited in htmx 4 unless marked so: the children keep their own swap.
    if (swap === false) attrs['hx-swap'] = 'none'
    return (
      <div {...attrs} {...rest}>
        {children}
      </div>
    )
  }
  if (htmx !== 2) throw new FST_ERR_HTML_SSE_COMPONENT_PROPS(`htmx must be 2 or 4, got ${String(htmx)}`)
  const ext = rest['hx-ext'] === undefined ? 'sse' : `${rest['hx-ext']}, sse`
  if (swap === false) {
    // htmx-ext-sse handles an event only through `sse-swap`, and htmx 2 applies the
    // partials in the swap it does then: swap `message` with `none`, which keeps only
    // the partials. hx-swap is inherited in htmx 2, so the children are told not to.
    const disinherit = rest['hx-disinherit']
    return (
      <div
        {...rest}
        hx-ext={ext}
        sse-connect={url}
        sse-swap="message"
        hx-swap="none"
        hx-disinherit={
          disinherit === undefined || disinherit === '' ? 'hx-swap' : disinherit === '*' ? '*' : `${disinherit} hx-swap`
        }
        sse-close={close}
      >
        {children}
      </div>
    )
  }
  return (
    <div {...rest} hx-ext={ext} sse-connect={url} sse-swap={swap} sse-close={close}>
      {children}
    </div>
  )
}

/** `url` with the `lastEventId` query parameter added (before any `#fragment`). */
function withLastEventId(url: string, lastEventId: string | null | undefined): string {
  if (lastEventId === undefined || lastEventId === null) return url
  if (typeof lastEventId !== 'string') {
    throw new FST_ERR_HTML_SSE_COMPONENT_PROPS(`lastEventId must be a string, got ${typeof lastEventId}`)
  }
  const hash = url.indexOf('#')
  const path = hash === -1 ? url : url.slice(0, hash)
  const fragment = hash === -1 ? '' : url.slice(hash)
  const query = path.indexOf('?')
  if (query !== -1 && new URLSearchParams(path.slice(query + 1)).has('lastEventId')) {
    throw new FST_ERR_HTML_SSE_COMPONENT_PROPS(`the url "${url}" already carries lastEventId; pass it in one place`)
  }
  const separator = query === -1 ? '?' : path.endsWith('?') || path.endsWith('&') ? '' : '&'
  return `${path}${separator}lastEventId=${encodeURIComponent(lastEventId)}${fragment}`
}
