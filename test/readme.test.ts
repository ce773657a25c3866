/**
 * The docs cannot drift from the package: every ```ts and ```tsx block of
 * README.md, docs/*.md and CONTRIBUTING.md is type-checked in a fresh strict
 * project with the tsconfig.json the README prints (plus `skipLibCheck: false`
 * and the strictest optional settings), against the built package as a user
 * installs it (run `npm run build` first); the README's Quick start runs as
 * printed (only its port is moved off 3000, which may be taken); every relative
 * link resolves to a file, and an `#anchor` into markdown to a heading; the
 * EventSource recipe in docs/deploying.md is the one the recovery grid runs.
 *
 * Convention for authors, an HTML comment (hidden when rendered) right above
 * the fence:
 * - `<!-- snippet-context: <TypeScript> -->` for a fragment: the declarations or
 *   imports it takes from the surrounding text (`declare const app: FastifyInstance`),
 *   prepended before type-checking. Never code that changes what the block does.
 * - `<!-- snippet-skip: <reason> -->` for a block that is not TypeScript to
 *   compile; the reason is required and printed.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync
} from 'node:fs'
import { get } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { promisify } from 'node:util'
import { test } from 'tap'
import { connect, until } from './helpers/sse.js'

const root = resolve(import.meta.dirname, '..')
/** Every markdown file whose snippets and links are checked, relative to the root. */
const DOCS = [
  'README.md',
  'CONTRIBUTING.md',
  ...readdirSync(join(root, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => `docs/${name}`)
]
const text = new Map(DOCS.map((file) => [file, readFileSync(join(root, file), 'utf8')]))
const readme = text.get('README.md') as string

/** A fenced code block. */
interface Block {
  /** 0-based index of the opening fence's line. */
  open: number
  /** 0-based index of the closing fence's line. */
  close: number
  lang: string
}

/** Every fenced block (``` or ~~~, closed by a fence of the same character at least as long). */
export function fencedBlocks(lines: readonly string[], file = 'README.md'): Block[] {
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const fence = /^(`{3,}|~{3,})\s*([^\s`]*)/.exec(lines[i] as string)
    if (fence === null) continue
    const marks = fence[1] as string
    const close = lines.findIndex((l, j) => {
      const bare = l.trimEnd()
      return j > i && bare.length >= marks.length && [...bare].every((c) => c === marks[0])
    })
    if (close === -1) throw new Error(`${file}:${i + 1}: unclosed code fence`)
    blocks.push({ open: i, close, lang: fence[2] as string })
    i = close
  }
  return blocks
}

interface Snippet {
  /** The markdown file, relative to the root. */
  file: string
  /** 1-based line of the block's first line of code. */
  line: number
  lang: 'ts' | 'tsx'
  code: string
  context: string
  skip: string | null
  section: string
}

/** Every ```ts / ```tsx block, with the marker comment above it and the `##`/`###` section it sits in. */
export function extractSnippets(markdown: string, file = 'README.md'): Snippet[] {
  const lines = markdown.split('\n')
  const snippets: Snippet[] = []
  const blocks = fencedBlocks(lines, file)
  let section = ''
  let at = 0
  for (const block of blocks) {
    for (; at < block.open; at++) {
      const line = lines[at] as string
      if (/^#{1,3} /.test(line)) section = line.replace(/^#+ /, '')
    }
    at = block.close + 1
    if (block.lang !== 'ts' && block.lang !== 'tsx') continue
    // The marker is the nearest non-blank text above the fence, when it is a snippet comment.
    let above = block.open - 1
    while (above >= 0 && (lines[above] as string).trim() === '') above--
    let start = above
    while (start >= 0 && !(lines[start] as string).includes('<!--')) start--
    const comment =
      start >= 0 && (lines[above] as string).trimEnd().endsWith('-->') ? lines.slice(start, above + 1).join('\n') : ''
    const marker = /^<!--\s*snippet-(context|skip):([\s\S]*?)-->$/.exec(comment.trim())
    snippets.push({
      file,
      line: block.open + 2,
      lang: block.lang,
      code: lines.slice(block.open + 1, block.close).join('\n'),
      context: marker?.[1] === 'context' ? (marker[2] as string).trim() : '',
      skip: marker?.[1] === 'skip' ? (marker[2] as string).trim() : null,
      section
    })
  }
  return snippets
}

const snippets = DOCS.flatMap((file) => extractSnippets(text.get(file) as string, file))
const quickStart = snippets.find((s) => s.file === 'README.md' && s.section === 'Quick start')

/** The file a snippet is compiled as: `docs/api.md` line 12 → `docs-api-12.ts`. */
function snippetFile(s: Snippet): string {
  return `${s.file
    .replace(/\.md$/, '')
    .replace(/[^A-Za-z0-9]+/g, '-')
    .toLowerCase()}-${s.line}.${s.lang}`
}

/** The README's tsconfig.json: the first ```json block of its Install section. */
function readmeTsconfig(): { compilerOptions: Record<string, unknown> } {
  const lines = readme.split('\n')
  const install = lines.indexOf('## Install')
  const block = fencedBlocks(lines).find((b) => b.open > install && b.lang === 'json')
  if (install === -1 || block === undefined) throw new Error('README.md: no ```json tsconfig in "## Install"')
  return JSON.parse(lines.slice(block.open + 1, block.close).join('\n'))
}

/**
 * A fresh project outside the repository: its node_modules links this package
 * (resolved through its `exports`, to the built dist/) and the installed
 * dependencies; its tsconfig.json is the README's, made stricter.
 */
function freshProject(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fastify-html-sse-readme-'))
  const modules = join(dir, 'node_modules')
  mkdirSync(modules)
  for (const name of readdirSync(join(root, 'node_modules'))) {
    if (name.startsWith('.')) continue
    symlinkSync(join(root, 'node_modules', name), join(modules, name))
  }
  symlinkSync(root, join(modules, 'fastify-html-sse'))
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'readme-snippets', private: true, type: 'module' }))
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        ...readmeTsconfig().compilerOptions,
        // The strictest settings users turn on: the package's option types must take them.
        exactOptionalPropertyTypes: true,
        noUncheckedIndexedAccess: true,
        types: ['node'],
        // TypeScript's default: the package's own declarations are checked as well.
        skipLibCheck: false,
        outDir: 'out',
        rootDir: 'src'
      },
      include: ['src']
    })
  )
  mkdirSync(join(dir, 'src'))
  return dir
}

test('the docs have TypeScript snippets, the README a TSX Quick start and at most 260 lines', async (t) => {
  t.ok(snippets.length >= 20, `${snippets.length} snippets in ${DOCS.length} files`)
  for (const file of ['README.md', 'docs/api.md', 'docs/brokers.md', 'docs/writing-a-broker.md']) {
    t.ok(
      snippets.some((s) => s.file === file && s.skip === null),
      `${file} has a compiled snippet`
    )
  }
  t.equal(quickStart?.lang, 'tsx')
  t.equal(quickStart?.context, '', 'the Quick start is a whole program')
  t.equal(quickStart?.skip, null, 'the Quick start is compiled')
  for (const s of snippets.filter((s) => s.skip !== null)) {
    t.ok(s.skip, `${s.file}:${s.line} (${s.section}) is skipped with a reason: ${s.skip}`)
  }
  const lines = readme.split('\n').length
  t.ok(lines <= 260, `README.md has ${lines} lines: a user reads it in minutes; the reference goes to docs/`)
})

test("the README's tsconfig.json names the settings the package needs", async (t) => {
  const { compilerOptions: options } = readmeTsconfig()
  t.match(options, {
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    jsx: 'react-jsx',
    jsxImportSource: '@kitajs/html'
  })
  t.match(options.plugins, [{ name: '@kitajs/ts-html-plugin' }], 'the XSS checks in the editor')
})

test('every snippet type-checks in a fresh strict project; the Quick start runs as printed', async (t) => {
  // The fresh project imports the package as a user would: through its exports, from dist/.
  const built = ['lib/index', 'components/index', 'lib/testing', 'lib/broker/redis', 'lib/broker/postgres'].every(
    (entry) => existsSync(join(root, 'dist', `${entry}.d.ts`))
  )
  t.ok(built, 'dist/ holds every entry (run `npm run build` first)')
  if (!built) return
  const dir = freshProject()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // Each block's file, so that an error points at its markdown line.
  const files = new Map<string, Snippet>()
  for (const s of snippets) {
    if (s.skip !== null) continue
    const name = snippetFile(s)
    const context = s.context === '' ? '' : `${s.context}\n`
    writeFileSync(join(dir, 'src', name), `${context}${s.code}\nexport {}\n`)
    files.set(name, s)
  }
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const result = await promisify(execFile)(process.execPath, [tsc, '-p', dir, '--pretty', 'false'], {
    cwd: dir,
    encoding: 'utf8'
  }).then(
    () => '',
    (err: { stdout?: string; message: string }) => err.stdout || err.message
  )
  // Map `src/<file>-<line>.tsx(row,col)` back to markdown lines.
  const located = result.replace(/src\/([a-z0-9-]+-\d+\.tsx?)\((\d+),(\d+)\)/g, (all, name: string, row, col) => {
    const s = files.get(name)
    if (s === undefined) return all
    const offset = s.context !== '' ? s.context.split('\n').length : 0
    return `${s.file}:${s.line + Number(row) - 1 - offset}:${col} (${s.section})`
  })
  t.equal(
    located,
    '',
    'tsc reports nothing (a fragment needs `<!-- snippet-context: … -->` above its fence: see test/readme.test.ts)'
  )
  if (quickStart === undefined || located !== '') return

  // Run the Quick start as printed; only the port moves off 3000.
  const emitted = join(dir, 'out', snippetFile(quickStart).replace(/\.tsx$/, '.js'))
  const js = readFileSync(emitted, 'utf8')
  const listen = 'app.listen({ port: 3000 })'
  t.equal(js.split(listen).length, 2, 'the Quick start listens once, on port 3000')
  writeFileSync(emitted, js.replace(listen, "app.listen({ port: 0, host: '127.0.0.1' })"))
  const child: ChildProcess = spawn(process.execPath, [emitted], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let out = ''
  let errors = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk
  })
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    errors += chunk
  })
  let exited = false
  child.once('exit', () => {
    exited = true
  })
  await until(
    () => /Server listening at http:\/\/127\.0\.0\.1:\d+/.test(out) || exited,
    15_000,
    'the Quick start to listen'
  )
  t.equal(errors, '', 'nothing on stderr')
  const base = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1]
  t.ok(base, 'the Quick start logs where it listens')
  if (base === undefined) return

  const page = await new Promise<{ status: number; type: string; body: string }>((ok, fail) => {
    get(`${base}/`, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => ok({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }))
    }).on('error', fail)
  })
  t.equal(page.status, 200)
  t.match(page.type, /^text\/html/)
  t.match(page.body, /^<!doctype html><html lang="en">/i, 'a standards-mode page')
  t.match(page.body, /sse-connect="\/events"/, 'the page connects to /events')
  t.match(page.body, /<script src="[^"]*htmx[^"]*"/, 'and loads htmx')

  const events = await connect(`${base}/events`)
  await events.waitFor(3, 10_000)
  events.close()
  t.same(
    events.events.slice(0, 3).map((e) => e.event ?? 'message'),
    ['message', 'message', 'message'],
    'unnamed events, which htmx 4 swaps too'
  )
  t.same(
    events.events
      .slice(0, 3)
      .map((e) => /^<button type="button">Update #(\d+) \d{4}-\d\d-\d\dT[\d:.]+Z<\/button>$/.exec(e.data)?.[1]),
    ['1', '2', '3'],
    'three numbered buttons'
  )
  const exit = new Promise((ok) => child.once('exit', ok))
  child.kill('SIGTERM')
  await exit
})

/** GitHub's anchor of a heading: lower case, punctuation dropped, each space a hyphen. */
export function slugOf(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]+>/g, '')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '')
    .replace(/\s/g, '-')
}

/** The anchors of a markdown file's headings (outside code blocks), repeats numbered as GitHub does. */
function anchorsOf(markdown: string, file: string): Set<string> {
  const lines = markdown.split('\n')
  const blocks = fencedBlocks(lines, file)
  const seen = new Map<string, number>()
  const anchors = new Set<string>()
  lines.forEach((line, i) => {
    const heading = /^#{1,6} (.+)$/.exec(line)
    if (heading === null || blocks.some((b) => b.open <= i && i <= b.close)) return
    const slug = slugOf(heading[1] as string)
    const n = seen.get(slug) ?? 0
    seen.set(slug, n + 1)
    anchors.add(n === 0 ? slug : `${slug}-${n}`)
  })
  return anchors
}

/** Every link target of a markdown file, outside code blocks and code spans, with its line. */
function linksOf(markdown: string, file: string): Array<{ line: number; target: string }> {
  const lines = markdown.split('\n')
  const blocks = fencedBlocks(lines, file)
  const links: Array<{ line: number; target: string }> = []
  lines.forEach((line, i) => {
    if (blocks.some((b) => b.open <= i && i <= b.close)) return
    const prose = line.replace(/(`+)[^`]*?\1/g, '``')
    for (const m of prose.matchAll(/\]\(([^()\s]+)(?:\s+"[^"]*")?\)/g))
      links.push({ line: i + 1, target: m[1] as string })
  })
  return links
}

test('every relative link in README.md, docs/ and CONTRIBUTING.md resolves, anchors included', async (t) => {
  const anchors = new Map<string, Set<string>>()
  const anchorsIn = (path: string) => {
    let found = anchors.get(path)
    if (found === undefined) {
      found = anchorsOf(readFileSync(path, 'utf8'), relative(root, path))
      anchors.set(path, found)
    }
    return found
  }
  let checked = 0
  for (const file of DOCS) {
    for (const { line, target } of linksOf(text.get(file) as string, file)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue
      checked++
      const hash = target.indexOf('#')
      const path = hash === -1 ? target : target.slice(0, hash)
      const anchor = hash === -1 ? '' : decodeURIComponent(target.slice(hash + 1))
      const resolved = path === '' ? join(root, file) : resolve(dirname(join(root, file)), path)
      const where = `${file}:${line}: ${target}`
      if (!resolved.startsWith(`${root}/`) || !existsSync(resolved)) {
        t.fail(`${where}: no such file`)
        continue
      }
      if (anchor !== '' && resolved.endsWith('.md') && !anchorsIn(resolved).has(anchor)) {
        t.fail(`${where}: no heading with this anchor in ${relative(root, resolved)}`)
      }
    }
  }
  t.ok(checked >= 40, `${checked} relative links checked`)
  t.equal(slugOf('A page without htmx: `new EventSource()`'), 'a-page-without-htmx-new-eventsource', 'slugs as GitHub')
})

test('the EventSource recipe in docs/deploying.md is the one the recovery grid runs', async (t) => {
  const grid = readFileSync(join(root, 'test', 'browser-recovery.test.tsx'), 'utf8')
  const recipe = /export const RECIPE = `([\s\S]*?)`\n/.exec(grid)?.[1]
  t.ok(recipe, 'RECIPE found in test/browser-recovery.test.tsx')
  const lines = (text.get('docs/deploying.md') as string).split('\n')
  const block = fencedBlocks(lines, 'docs/deploying.md').find(
    (b) => b.lang === 'js' && lines[b.open + 1] === '// /items.js'
  )
  t.ok(block, 'docs/deploying.md has the /items.js block')
  if (block === undefined || recipe === undefined) return
  t.equal(lines.slice(block.open + 2, block.close).join('\n'), recipe, 'the same script, line for line')
})
