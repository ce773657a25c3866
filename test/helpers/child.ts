/**
 * A child `node` running a TypeScript file of the tests through the ts-node
 * ESM loader tap uses: no build step, and the child runs the very source under
 * test. Its stdout and stderr are the parent's; it has an IPC channel.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/** Runs `file` (a URL, as `new URL('./x.ts', import.meta.url)` gives) with `args`. */
export function sourceChild(file: URL, args: readonly string[]): ChildProcess {
  return spawn(
    process.execPath,
    ['--import', import.meta.resolve('@tapjs/typescript/import'), fileURLToPath(file), ...args],
    {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: {
        ...process.env,
        TS_NODE_TRANSPILE_ONLY: '1',
        TS_NODE_PROJECT: fileURLToPath(new URL('../../tsconfig.json', import.meta.url))
      }
    }
  )
}
