// Runs before `npm test`: the suite drives Debian's Chromium and starts private
// `redis-server` processes. When either is missing, root installs it from
// Debian's packages (as a fresh CI machine needs); anyone else is told the
// exact command, before a slow build runs only to fail at the end.
import { spawnSync } from 'node:child_process'
import { accessSync, constants } from 'node:fs'

const CHROMIUM = '/usr/bin/chromium'

const executable = (path) => {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}
const onPath = (command) =>
  (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && executable(`${dir}/${command}`))

const missing = []
if (!executable(CHROMIUM)) missing.push('chromium')
if (!onPath('redis-server')) missing.push('redis-server')
if (missing.length === 0) process.exit(0)

const install = `apt-get install -y --no-install-recommends ${missing.join(' ')}`
if (process.getuid?.() !== 0 || !onPath('apt-get')) {
  console.error(
    `npm test needs ${missing.join(' and ')} (Debian packages). Install ${missing.length > 1 ? 'them' : 'it'} with:\n\n` +
      `  sudo apt-get update && sudo ${install}\n`
  )
  process.exit(1)
}

console.error(`npm test: installing ${missing.join(' and ')} from Debian's packages`)
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
for (const command of ['apt-get update -qq', `${install} -qq`]) {
  const [file, ...args] = command.split(' ')
  const result = spawnSync(file, args, { stdio: ['ignore', 'inherit', 'inherit'], env })
  if (result.status !== 0) {
    console.error(`npm test: \`${command}\` failed (exit ${result.status ?? result.signal}); run it yourself and retry`)
    process.exit(1)
  }
}
const still = missing.filter((name) => (name === 'chromium' ? !executable(CHROMIUM) : !onPath(name)))
if (still.length > 0) {
  console.error(`npm test: ${still.join(' and ')} still missing after apt-get install`)
  process.exit(1)
}
