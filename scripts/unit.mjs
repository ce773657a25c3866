// `npm run test:unit`: the tests that need no Redis, no browser, no build and no
// network, in one process. Run file by file, each tap child spends more time
// loading TypeScript and compiling the library than testing; here that happens
// once. Files named *redis*, browser*, example*, package*, leak* or readme* are
// left out: they need Redis, Chromium, the registry, or a long soak.
// Usage: node --import @tapjs/typescript/import scripts/unit.mjs [file…]
import { readdirSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

const SLOW = /redis|postgres|^browser|^example|^package|^leak|^readme/
const root = new URL('../test/', import.meta.url)
const files =
  process.argv.length > 2
    ? process.argv.slice(2).map((file) => pathToFileURL(file))
    : readdirSync(root)
        .filter((name) => /\.test\.tsx?$/.test(name) && !SLOW.test(name))
        .sort()
        .map((name) => new URL(name, root))

const { t } = await import('tap')
// Every file in one process: tap's default 30 s for the whole run is too short (a slow-reader test alone reads 16 MB at 1 MB/s).
t.setTimeout(600_000)
for (const file of files) {
  await import(file.href)
  // Subtests run in order: this one ends after every test the file queued, so the next
  // file's module code (a global set at import, say) cannot reach into this file's tests.
  await t.test(`${file.pathname.slice(file.pathname.lastIndexOf('/test/') + 1)}: all its tests ran`, (tt) => tt.end())
}
