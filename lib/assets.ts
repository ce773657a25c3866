/**
 * The pinned client files the plugin serves, so a page needs no CDN.
 * Shared by the plugin (which serves them) and the components (which link them).
 *
 * Each file is linked at a path that carries a hash of its content
 * (`/fastify-html-sse/<hash>/htmx2.min.js`) and served `immutable`: a browser
 * caches it for good, and an upgrade changes the path, so no page runs a stale
 * htmx. The bare path (`/fastify-html-sse/htmx2.min.js`) keeps working for
 * hand-written tags, revalidated on every load.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'

/** Where the plugin serves the client files. @default '/fastify-html-sse/' */
export const DEFAULT_ASSETS_PREFIX = '/fastify-html-sse/'

/**
 * The files, by the name they are served under, with where they come from: an
 * installed package's file, or (`./…`) a file of this package.
 */
export const ASSETS = {
  'htmx2.min.js': 'htmx.org/dist/htmx.min.js',
  'htmx2-sse.min.js': 'htmx-ext-sse/dist/sse.min.js',
  'htmx2-resume.js': './client/htmx2-resume.js',
  'htmx4.min.js': 'htmx4/dist/htmx.min.js',
  'htmx4-sse.min.js': 'htmx4/dist/ext/hx-sse.min.js',
  'htmx4-resume.js': './client/htmx4-resume.js'
} as const

/** A served file's name. */
export type AssetName = keyof typeof ASSETS

/** The scripts each htmx line needs, in load order. */
export const HTMX_SCRIPTS: Record<2 | 4, readonly AssetName[]> = {
  // htmx2-resume.js keeps a page's place when htmx-ext-sse replaces an EventSource
  // after an HTTP error. htmx4-resume.js retries a first connect that failed (hx-sse
  // retries only a stream it already has, and keeps its place itself).
  2: ['htmx2.min.js', 'htmx2-sse.min.js', 'htmx2-resume.js'],
  4: ['htmx4.min.js', 'htmx4-sse.min.js', 'htmx4-resume.js']
}

interface Asset {
  body: Buffer
  /** A hash of the content: the versioned path segment, and the ETag of the bare path. */
  hash: string
}

let loaded: Map<string, Asset> | null = null

/** Reads and hashes the files once per process, on first use. */
function assets(): Map<string, Asset> {
  if (loaded !== null) return loaded
  const require = createRequire(import.meta.url)
  // This package's own files, found through its `exports` ("./package.json"), so the
  // lookup works from the sources, from dist/ and from an installed copy alike.
  const root = dirname(require.resolve('fastify-html-sse/package.json'))
  loaded = new Map()
  for (const [name, file] of Object.entries(ASSETS)) {
    const body = readFileSync(file.startsWith('./') ? join(root, file) : require.resolve(file))
    const hash = createHash('sha256').update(body).digest('base64url').slice(0, 12)
    loaded.set(name, { body, hash })
  }
  return loaded
}

/**
 * The path of a client file under `prefix`, versioned by a hash of its content.
 *
 * @example
 * ```ts
 * assetPath('htmx2.min.js') // '/fastify-html-sse/Zb3k…/htmx2.min.js'
 * ```
 */
export function assetPath(name: AssetName, prefix: string = DEFAULT_ASSETS_PREFIX): string {
  const asset = assets().get(name) as Asset
  return `${prefix}${asset.hash}/${name}`
}

const IMMUTABLE = 'public, max-age=31536000, immutable'

function send(reply: FastifyReply, asset: Asset, cacheControl: string): FastifyReply {
  return reply
    .header('content-type', 'text/javascript; charset=utf-8')
    .header('cache-control', cacheControl)
    .header('etag', `"${asset.hash}"`)
    .send(asset.body)
}

/** Serves the client files under `prefix`: versioned paths `immutable`, bare names revalidated. */
export function serveAssets(app: FastifyInstance, prefix: string): void {
  const files = assets()
  const hide = { schema: { hide: true } as Record<string, unknown> }
  app.get(
    `${prefix}:hash/:file`,
    hide,
    (request: FastifyRequest<{ Params: { hash: string; file: string } }>, reply) => {
      const asset = files.get(request.params.file)
      // Another hash is another version of the file, which this process does not have.
      if (asset === undefined || asset.hash !== request.params.hash) return reply.callNotFound()
      return send(reply, asset, IMMUTABLE)
    }
  )
  app.get(`${prefix}:file`, hide, (request: FastifyRequest<{ Params: { file: string } }>, reply) => {
    const asset = files.get(request.params.file)
    if (asset === undefined) return reply.callNotFound()
    if (request.headers['if-none-match'] === `"${asset.hash}"`) return reply.code(304).send()
    return send(reply, asset, 'no-cache')
  })
}
