import { postgresAdapter } from '@payloadcms/db-postgres'
import { lexicalEditor } from '@payloadcms/richtext-lexical'
import path from 'node:path'
import { buildConfig } from 'payload'
import { fileURLToPath } from 'node:url'

import { Media } from './collections/Media'
import { Posts } from './collections/Posts'
import { Users } from './collections/Users'
import { publishPost } from './jobs/publishPost'
import { mediaStorage } from './lib/mediaStorage'
import { attachPoolErrorHandler } from './lib/poolErrors'
import { migrations } from './migrations'

const filename = fileURLToPath(import.meta.url)
const dirname = path.dirname(filename)

export default buildConfig({
  admin: {
    user: Users.slug,
    importMap: {
      baseDir: path.resolve(dirname),
    },
  },
  collections: [Users, Posts, Media],
  editor: lexicalEditor(),
  // Payload's jobs queue (scheduled publishing). Nothing here runs the jobs: on a server, vpskit runs one worker
  // for them (docs/DOCKER-DEPLOYMENT.md, "Running Payload on several instances"); locally, `pnpm payload jobs:run`.
  jobs: {
    tasks: [publishPost],
  },
  secret: process.env.PAYLOAD_SECRET || '',
  // The site's public address (vpskit sets it from `domain` or `public_url`): absolute links point there.
  serverURL: process.env.PAYLOAD_PUBLIC_SERVER_URL || '',
  // The largest file an upload may carry. Payload keeps an upload in memory while it handles it, so a bound keeps a
  // 448 MB app container alive; vpskit's proxy reads it and answers 413 above it and 1 MB for the form.
  upload: {
    limits: { fileSize: 24 * 1024 * 1024 },
  },
  // No start-up telemetry from servers: Payload otherwise reports to its own host at every boot.
  telemetry: false,
  typescript: {
    outputFile: path.resolve(dirname, 'payload-types.ts'),
  },
  db: postgresAdapter({
    pool: {
      connectionString: process.env.DATABASE_URI,
      // A new connection (a forked backend, SCRAM) can take seconds on a busy 1-CPU server, e.g. while another
      // app on it boots a new version: 3 s failed a write there, and Payload reports a failed lookup of the
      // logged-in user as 403. Readiness has its own 4 s limit, so this does not slow it down.
      connectionTimeoutMillis: 10000,
      // Idle connections live past the healthcheck's 10 s interval, so it does not reconnect every time.
      idleTimeoutMillis: 60000,
    },
    // Never push the schema from the running app (not even in dev): the schema
    // changes only through committed migrations in src/migrations.
    push: false,
    // Applied automatically on Payload init when NODE_ENV=production.
    prodMigrations: migrations,
    migrationDir: path.resolve(dirname, 'migrations'),
  }),
  plugins: [mediaStorage()],
  onInit: async (payload) => {
    attachPoolErrorHandler(payload)
  },
})
