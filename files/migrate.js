// vpskit's migration runner, in every image vpskit builds: run once per release in a one-shot container of the
// new version (compose service `migrate`), before it gets traffic. It starts the app's own server on
// 127.0.0.1 with a token only this run knows, asks the route vpskit added to the build to apply the app's
// Payload migrations, stops the server and exits 0 when they were applied, 1 otherwise. Payload's own lines
// (Migrating: / Migrated: / Error running migration) come from the server, on this container's output.
'use strict'
const { spawn } = require('node:child_process')
const { randomBytes } = require('node:crypto')
const http = require('node:http')

const port = Number(process.env.PORT || 3000)
const token = randomBytes(24).toString('hex')
const path = '/api/vpskit-migrate'
const START_LIMIT_MS = 120000 // for the server to take the request; the migrations themselves are not timed

const server = spawn(process.execPath, ['server.js'], { // the image's working directory: /app
  stdio: 'inherit',
  env: { ...process.env, HOSTNAME: '127.0.0.1', VPSKIT_MIGRATE_TOKEN: token },
})
let result = null
server.on('exit', (code, signal) => {
  if (result === null) {
    console.error(`vpskit: the app's server ended (${signal || `exit ${code}`}) before the migrations were applied`)
  }
  process.exit(result === null ? code || 1 : result)
})

function finish(status, line) {
  ;(status === 0 ? console.log : console.error)(`vpskit: ${line}`)
  result = status
  server.kill('SIGTERM')
  setTimeout(() => process.exit(status), 10000).unref()
}

function ask() {
  // No timeout once the server took the request: a long migration is waited for, never asked twice.
  const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers: { 'x-vpskit-migrate': token } })
  req.on('response', (res) => {
    let body = ''
    res.setEncoding('utf8')
    res.on('data', (chunk) => { body += chunk })
    res.on('end', () => {
      if (res.statusCode === 200) finish(0, `migrations applied (${body.slice(0, 2000)})`)
      else finish(1, `${path} answered ${res.statusCode}: ${body.slice(0, 300)} (is the image built by vpskit?)`)
    })
  })
  req.on('error', (err) => {
    if (err.code === 'ECONNREFUSED' && Date.now() - started < START_LIMIT_MS) {
      setTimeout(ask, 250) // not listening yet
    } else if (err.code === 'ECONNREFUSED') {
      finish(1, `the app's server did not listen on port ${port} within ${START_LIMIT_MS / 1000}s`)
    } else {
      // The connection dropped while migrating: the server ended (its exit is reported above) or failed.
      setTimeout(() => finish(1, `the request to ${path} failed (${err.code || err.message})`), 2000)
    }
  })
  req.end()
}

// docker stop: the server is stopped with it (this process is the container's first and ignores SIGTERM otherwise).
process.on('SIGTERM', () => server.kill('SIGTERM'))
const started = Date.now()
ask()
