/**
 * The pinned htmx client files the plugin serves, so a page needs no CDN.
 * Shared by the plugin (which serves them) and the components (which link them).
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { FastifyInstance, FastifyRequest } from 'fastify'

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

/** Serves the client files under `prefix`. */
export function serveAssets(app: FastifyInstance, prefix: string): void {
  const require = createRequire(import.meta.url)
  const files = new Map<string, Buffer>()
  for (const [name, file] of Object.entries(ASSETS)) files.set(name, readFileSync(require.resolve(file)))
  app.get(
    `${prefix}:file`,
    { schema: { hide: true } as Record<string, unknown> },
    (request: FastifyRequest<{ Params: { file: AssetName } }>, reply) => {
      const body = files.get(request.params.file)
      if (body === undefined) return reply.callNotFound()
      return reply
        .header('content-type', 'text/javascript; charset=utf-8')
        .header('cache-control', 'public, max-age=86400')
        .send(body)
    }
  )
}
