import type { PropsWithChildren } from '@kitajs/html'
import { FST_ERR_HTML_SSE_COMPONENT_PROPS } from '../lib/errors.js'

/** Props of `<SseSource>`. Other attributes pass through to the element. */
export type SseSourceProps = PropsWithChildren<
  {
    /** The event stream's URL. */
    url: string
    /**
     * htmx 2: the event(s) swapped into this element (`sse-swap`); `false` for a
     * connection only (its events target elsewhere, e.g. with `<hx-partial>`).
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
 * // Resume from the moment the list was rendered:
 * <SseSource url="/notes/events" lastEventId={await app.sse.lastId()}>
 *   <NoteList notes={notes} />
 * </SseSource>
 * ```
 */
export function SseSource(props: SseSourceProps): JSX.Element {
  const { url: base, swap = 'message', close, htmx = 2, lastEventId, children, ...rest } = props
  const url = withLastEventId(base, lastEventId)
  if (htmx === 4) {
    if (swap !== 'message' && swap !== false) {
      throw new FST_ERR_HTML_SSE_COMPONENT_PROPS(
        `htmx 4 swaps only unnamed events: <SseSource htmx={4}> cannot swap "${swap}"; send it as "message" or listen for the "${swap}" DOM event`
      )
    }
    const attrs: Record<string, string> = { 'hx-sse:connect': url }
    if (close !== undefined) attrs['hx-sse:close'] = close
    return (
      <div {...attrs} {...rest}>
        {children}
      </div>
    )
  }
  if (htmx !== 2) throw new FST_ERR_HTML_SSE_COMPONENT_PROPS(`htmx must be 2 or 4, got ${String(htmx)}`)
  const ext = rest['hx-ext'] === undefined ? 'sse' : `${rest['hx-ext']}, sse`
  return (
    <div {...rest} hx-ext={ext} sse-connect={url} sse-swap={swap === false ? undefined : swap} sse-close={close}>
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
