import { assetPath, DEFAULT_ASSETS_PREFIX, HTMX_SCRIPTS } from '../lib/assets.js'
import { FST_ERR_HTML_SSE_COMPONENT_PROPS } from '../lib/errors.js'

/** Props of `<HtmxScripts>`. */
export interface HtmxScriptsProps {
  /** Which htmx line to load. @default 2 */
  htmx?: 2 | 4 | undefined
  /** The plugin's `assetsPrefix`, if you changed it. @default '/fastify-html-sse/' */
  prefix?: string | undefined
}

/**
 * The `<script>` tags that load htmx and its SSE extension from the app itself
 * (the plugin serves the installed, pinned files: no CDN needed). Each path
 * carries a hash of the file, so browsers cache it for good and an upgrade is
 * picked up at once. Each line also gets a small script of this package: for
 * htmx 2, one that keeps a page's place in its streams when htmx-ext-sse
 * replaces an EventSource after an HTTP error; for htmx 4, one that retries the
 * first connect of an `hx-sse:connect` element when it fails (a proxy's 502, a
 * dropped connection), which `hx-sse` does only for a stream it already has.
 *
 * @example
 * ```tsx
 * <head><HtmxScripts htmx={4} /></head>
 * ```
 */
export function HtmxScripts({ htmx = 2, prefix = DEFAULT_ASSETS_PREFIX }: HtmxScriptsProps = {}): JSX.Element {
  const files = HTMX_SCRIPTS[htmx]
  if (files === undefined) throw new FST_ERR_HTML_SSE_COMPONENT_PROPS(`htmx must be 2 or 4, got ${String(htmx)}`)
  return (
    <>
      {files.map((file) => (
        <script src={assetPath(file, prefix)}></script>
      ))}
    </>
  )
}
