// tap 21 has no numeric thresholds: it fails below 100% unless told otherwise.
// We allow incomplete coverage in tap and hold the line here instead, at levels
// just under what the suite reaches (lib/ and components/ are at 100% of lines;
// what stays uncovered is mostly Redis fault handling in lib/broker/redis.ts,
// whose timing-dependent paths vary by a point between runs), so a change that
// drops coverage fails `npm test`.
import { readFileSync } from 'node:fs'

const THRESHOLDS = { lines: 98, statements: 98, functions: 96, branches: 93 }

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
