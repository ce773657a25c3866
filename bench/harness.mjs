// Processes of a benchmark run: children driven over IPC (`Child`, `serve`),
// a private redis-server, the private build of the plugin, and the lock that
// keeps two benchmark runs from measuring each other.

import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const HERE = path.dirname(fileURLToPath(import.meta.url))
export const ROOT = path.resolve(HERE, '..')
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const canPin = (() => {
  try {
    return (
      os.availableParallelism() >= 2 && execFileSync('taskset', ['-c', '1', 'echo', 'ok']).toString().trim() === 'ok'
    )
  } catch {
    return false
  }
})()

/** A child process driven over IPC: `await child.rpc(cmd, args)`; unsolicited messages via `child.next(type)`. */
export class Child {
  constructor(name, script, argv = [], { cpu, execArgv = [], env } = {}) {
    this.name = name
    this.pending = new Map()
    this.inbox = []
    this.waiters = []
    this.id = 0
    const cmd = [process.execPath, ...execArgv, path.join(HERE, script), ...argv]
    const [file, ...args] = canPin && cpu !== undefined ? ['taskset', '-c', String(cpu), ...cmd] : cmd
    this.proc = spawn(file, args, {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    })
    this.pid = this.proc.pid
    this.exited = new Promise((resolve) => this.proc.once('exit', resolve))
    this.proc.on('message', (m) => {
      const p = m.id !== undefined && this.pending.get(m.id)
      if (p) {
        this.pending.delete(m.id)
        clearTimeout(p.timer)
        if (m.ok) p.resolve(m.value)
        else p.reject(new Error(`${this.name}: ${m.error}`))
      } else if (m.id === undefined) {
        this.inbox.push(m)
        for (const w of this.waiters.splice(0)) w()
      }
    })
    this.proc.once('exit', (code, signal) => {
      this.dead = `${this.name} exited (code ${code}, signal ${signal})`
      for (const p of this.pending.values()) p.reject(new Error(this.dead))
      for (const w of this.waiters.splice(0)) w()
    })
  }

  rpc(cmd, args = {}, timeoutMs = 120_000) {
    if (this.dead) return Promise.reject(new Error(this.dead))
    const id = ++this.id
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`${this.name}: ${cmd} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { resolve, reject, timer })
      this.proc.send({ id, cmd, args })
    })
  }

  /** The next unsolicited message of `type` (`ready` once the child has started). */
  async next(type, timeoutMs = 60_000) {
    const end = Date.now() + timeoutMs
    for (;;) {
      const i = this.inbox.findIndex((m) => m.type === type || m.type === 'failed')
      if (i >= 0) {
        const [m] = this.inbox.splice(i, 1)
        if (m.type === 'failed') throw new Error(`${this.name}: ${m.error}`)
        return m
      }
      if (this.dead) throw new Error(this.dead)
      if (Date.now() > end) throw new Error(`${this.name}: no ${type} within ${timeoutMs} ms`)
      await new Promise((resolve) => {
        this.waiters.push(resolve)
        setTimeout(resolve, 200)
      })
    }
  }

  async stop() {
    if (this.dead) return
    this.rpc('exit', {}, 5000).catch(() => {})
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 8000)
    await this.exited
    clearTimeout(timer)
  }
}

/** The child side: answer the parent's rpc calls with `handlers`, then report `ready` with `info`. */
export function serve(handlers, info = {}) {
  handlers.exit ??= () => setImmediate(() => process.exit(0))
  process.on('message', async ({ id, cmd, args }) => {
    try {
      if (!handlers[cmd]) throw new Error(`unknown command ${cmd}`)
      process.send({ id, ok: true, value: await handlers[cmd](args) })
    } catch (err) {
      process.send({ id, ok: false, error: String(err?.stack ?? err) })
    }
  })
  process.on('disconnect', () => process.exit(0))
  process.send({ type: 'ready', ...info })
}

/** Report a failed start to the parent and exit. */
export function failed(err) {
  process.send({ type: 'failed', error: String(err?.stack ?? err) })
  setImmediate(() => process.exit(1))
}

async function freePort() {
  const srv = net.createServer()
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address()
  await new Promise((resolve) => srv.close(resolve))
  return port
}

/** A private redis-server on a free port (never the shared 6379), no persistence: { url, version, cpuMs(), commands(), stop() }. */
export async function startRedis() {
  const port = await freePort()
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
  const proc = spawn('redis-server', args, { stdio: 'ignore' })
  const { createClient } = await import('redis')
  const url = `redis://127.0.0.1:${port}`
  const client = createClient({ url, socket: { reconnectStrategy: false } })
  for (let i = 0; ; i++) {
    try {
      await client.connect()
      break
    } catch (err) {
      if (i > 100) throw err
      await sleep(50)
    }
  }
  return {
    url,
    version: (await client.info('server')).match(/redis_version:(\S+)/)?.[1],
    /** Its CPU time (user + system, ms), from /proc/<pid>/stat. */
    cpuMs() {
      const f = readFileSync(`/proc/${proc.pid}/stat`, 'utf8').split(') ')[1].split(' ')
      return ((Number(f[11]) + Number(f[12])) * 1000) / 100
    },
    /** Total calls per command since start, from INFO commandstats. */
    async commands() {
      const out = {}
      for (const m of (await client.info('commandstats')).matchAll(/cmdstat_(\S+?):calls=(\d+)/g))
        out[m[1]] = Number(m[2])
      return out
    },
    async stop() {
      await client.quit().catch(() => {})
      proc.kill('SIGTERM')
    }
  }
}

/** CPU time (user + system, ms) of this process. */
export function cpuMs() {
  const c = process.cpuUsage()
  return (c.user + c.system) / 1000
}

/** Build the plugin as committed at `ref` (HEAD, or BENCH_REF) into a private copy: { dir, commit }; see bench/README.md. */
export function buildOurs(ref) {
  if (ref === undefined && process.env.BENCH_OURS_DIR)
    return { dir: process.env.BENCH_OURS_DIR, commit: 'BENCH_OURS_DIR' }
  ref ??= process.env.BENCH_REF ?? 'HEAD'
  const commit = execFileSync('git', ['rev-parse', '--short', ref], { cwd: ROOT }).toString().trim()
  const dir = path.join(os.tmpdir(), `fastify-html-sse-bench-${commit}`)
  if (!existsSync(path.join(dir, 'dist', '.done'))) {
    rmSync(dir, { recursive: true, force: true })
    mkdirSync(dir)
    execFileSync('sh', ['-c', `git archive ${commit} | tar -x -C ${dir}`], { cwd: ROOT })
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'))
    execFileSync(path.join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json'], {
      cwd: dir,
      stdio: 'inherit'
    })
    writeFileSync(path.join(dir, 'dist', '.done'), commit)
  }
  return { dir, commit }
}

/** Absolute path of a package entry ('.', './redis') in the private build. */
export function oursEntry(dir, entry = '.') {
  const exp = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')).exports[entry]
  return path.join(dir, typeof exp === 'string' ? exp : exp.default)
}

/** One benchmark at a time on this machine: a lock file holding the owner's pid. */
export async function lock(timeoutMs = 30 * 60_000) {
  const file = path.join(os.tmpdir(), 'fastify-html-sse-bench.lock')
  const end = Date.now() + timeoutMs
  for (let said = false; ; ) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' })
      process.on('exit', () => rmSync(file, { force: true }))
      return
    } catch {
      const owner = Number(readFileSync(file, 'utf8'))
      let alive = !(owner > 0) // being written
      try {
        alive ||= process.kill(owner, 0)
      } catch {}
      if (!alive) rmSync(file, { force: true })
      else if (Date.now() > end) throw new Error(`another benchmark (pid ${owner}) holds ${file}`)
      else if (!said) {
        said = true
        console.error(`waiting for the benchmark with pid ${owner} to finish`)
      }
      await sleep(1000)
    }
  }
}
