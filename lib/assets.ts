/**
 * The pinned htmx client files the plugin serves, so a page needs no CDN.
 * Shared by the plugin (which serves them) and the components (which link them).
 */

/** Where the plugin serves the client files. @default '/fastify-html-sse/' */
export const DEFAULT_ASSETS_PREFIX = '/fastify-html-sse/'

/** The files, by the name they are served under, with the installed file they come from. */
export const ASSETS = {
  'htmx2.min.js': 'htmx.org/dist/htmx.min.js',
  'htmx2-sse.min.js': 'htmx-ext-sse/dist/sse.min.js',
  'htmx4.min.js': 'htmx4/dist/htmx.min.js',
  'htmx4-sse.min.js': 'htmx4/dist/ext/hx-sse.min.js'
} as const

/** A served file's name. */
export type AssetName = keyof typeof ASSETS

/** The scripts each htmx line needs, in load order. */
export const HTMX_SCRIPTS: Record<2 | 4, readonly AssetName[]> = {
  2: ['htmx2.min.js', 'htmx2-sse.min.js'],
  4: ['htmx4.min.js', 'htmx4-sse.min.js']
}
