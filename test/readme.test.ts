/**
 * The README's TypeScript cannot drift from the package: every ```ts and ```tsx
 * block is type-checked in a fresh strict project with the settings the README
 * names, against the built package as a user installs it, and the Quick start
 * runs as printed (only its port is moved off 3000, which may be taken).
 *
 * Convention for README authors, an HTML comment (hidden when rendered) right
 * above the fence:
 * - `<!-- snippet-context: <TypeScript> -->` for a fragment: the declarations or
 *   imports it takes from the surrounding text (`declare const app: FastifyInstance`),
 *   prepended before type-checking. Never code that changes what the block does.
 * - `<!-- snippet-skip: <reason> -->` for a block that is not TypeScript to
 *   compile; the reason is required and printed.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { test } from 'tap'
import { connect, until } from './helpers/sse.js'

const root = resolve(import.meta.dirname, '..')
const readme = readFileSync(join(root, 'README.md'), 'utf8')

interface Snippet {
  /** 1-based README line of the block's first line of code. */
  line: number
  lang: 'ts' | 'tsx'
  code: string
  context: string
  skip: string | null
  section: string
}

/** Every ```ts / ```tsx block, with the marker comment above it and the `##` section it sits in. */
export function extractSnippets(markdown: string): Snippet[] {
  const lines = markdown.split('\n')
  const snippets: Snippet[] = []
  let section = ''
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i] as string
    if (/^#{2,3} /.test(text)) section = text.replace(/^#+ /, '')
    const fence = /^```(\w*)/.exec(text)
    if (fence === null) continue
    const end = lines.findIndex((l, j) => j > i && l.startsWith('```'))
    if (end === -1) throw new Error(`README.md:${i + 1}: unclosed code fence`)
    const lang = fence[1]
    if (lang === 'ts' || lang === 'tsx') {
      // The marker is the nearest non-blank text above the fence, when it is a snippet comment.
      let above = i - 1
      while (above >= 0 && (lines[above] as string).trim() === '') above--
      let start = above
      while (start >= 0 && !(lines[start] as string).includes('<!--')) start--
      const comment =
        start >= 0 && (lines[above] as string).trimEnd().endsWith('-->') ? lines.slice(start, above + 1).join('\n') : ''
      const marker = /^<!--\s*snippet-(context|skip):([\s\S]*?)-->$/.exec(comment.trim())
      snippets.push({
        line: i + 2,
        lang,
        code: lines.slice(i + 1, end).join('\n'),
        context: marker?.[1] === 'context' ? (marker[2] as string).trim() : '',
        skip: marker?.[1] === 'skip' ? (marker[2] as string).trim() : null,
        section
      })
    }
    i = end
  }
  return snippets
}

const snippets = extractSnippets(readme)
const quickStart = snippets.find((s) => s.section === 'Quick start')

/**
 * A fresh project outside the repository: its node_modules links this package
 * (resolved through its `exports`, to the built dist/) and the installed dependencies.
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
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        // The strictest settings users turn on: the package's option types must take them.
        exactOptionalPropertyTypes: true,
        noUncheckedIndexedAccess: true,
        jsx: 'react-jsx',
        jsxImportSource: '@kitajs/html',
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

test('the README has TypeScript snippets and a TSX Quick start', async (t) => {
  t.ok(snippets.length >= 4, `${snippets.length} snippets`)
  t.equal(quickStart?.lang, 'tsx')
  t.equal(quickStart?.context, '', 'the Quick start is a whole program')
  t.equal(quickStart?.skip, null, 'the Quick start is compiled')
  for (const s of snippets.filter((s) => s.skip !== null)) {
    t.ok(s.skip, `README.md:${s.line} (${s.section}) is skipped with a reason: ${s.skip}`)
  }
})

test('every README snippet type-checks in a fresh strict project; the Quick start runs as printed', async (t) => {
  const dir = freshProject()
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // Each block's file, so that an error points at its README line.
  const files = new Map<string, Snippet>()
  for (const s of snippets) {
    if (s.skip !== null) continue
    const name = `readme-${s.line}.${s.lang}`
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
  // Map `src/readme-<line>.tsx(row,col)` back to README lines.
  const located = result.replace(/src\/(readme-(\d+)\.tsx?)\((\d+),(\d+)\)/g, (_all, name: string, line, row, col) => {
    const s = files.get(name)
    const offset = s && s.context !== '' ? s.context.split('\n').length : 0
    return `README.md:${Number(line) + Number(row) - 1 - offset}:${col} (${s?.section})`
  })
  t.equal(
    located,
    '',
    'tsc reports nothing (a fragment needs `<!-- snippet-context: … -->` above its fence: see test/readme.test.ts)'
  )
  if (quickStart === undefined || located !== '') return

  // Run the Quick start as printed; only the port moves off 3000.
  const emitted = join(dir, 'out', `readme-${quickStart.line}.js`)
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
