// tap 21 has no numeric thresholds: it fails below 100% unless told otherwise.
// We allow incomplete coverage in tap and hold the line here instead. The
// levels are what consecutive `npm test` runs reached (lines and statements
// 98.9%, functions 96.23–96.26%, branches 95.25–95.46%: a few Redis fault
// branches are taken in some runs and not in others), less a little, so a
// change that drops coverage fails `npm test`. What stays
// uncovered is mostly Redis connection handling that needs a server to fail in
// a particular way between two commands, and defensive branches.
import { readFileSync } from 'node:fs'

const THRESHOLDS = { lines: 98.5, statements: 98.5, functions: 96, branches: 94.5 }

const summary = JSON.parse(readFileSync(new URL('../.tap/report/coverage-summary.json', import.meta.url), 'utf8'))
const failed = []
for (const [metric, min] of Object.entries(THRESHOLDS)) {
  const pct = summary.total[metric].pct
  console.log(`coverage ${metric}: ${pct}% (minimum ${min}%)`)
  if (pct < min) failed.push(`${metric} ${pct}% < ${min}%`)
}
if (failed.length > 0) {
  console.error(`coverage below the thresholds: ${failed.join(', ')}`)
  process.exit(1)
}
