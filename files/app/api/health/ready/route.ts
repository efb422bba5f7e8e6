// vpskit readiness route: copy the folder files/app/api/health into src/app/api/. 200 when the app can
// serve; 503 with the reason otherwise: the database does not answer `select 1` (through Payload's own
// pool, bounded by a short timeout), a table the app's collections need is missing, or its schema is behind
// the code (a migration the app bundles is not in payload_migrations). VPSKIT_MIGRATIONS, the bundled
// migrations, is set in the image by vpskit; without it the migrations are not checked. The compose
// healthcheck, the deploy's wait and tasks/health.py use it.
// Needs @payloadcms/db-postgres.
import config from '@payload-config'
import { getPayload } from 'payload'

export const dynamic = 'force-dynamic'

// Under the healthcheck's own 5 s, with room for a busy 1-CPU server (a new version booting beside the old one).
const TIMEOUT_MS = 4000

type Pool = { query: (sql: string, params?: unknown[]) => Promise<{ rows: { name: string }[] }> }
type Adapter = { pool?: Pool; tables?: Record<string, unknown>; schemaName?: string }

/** Resolves to the warnings (migrations the database has and this version does not bundle, e.g. after a
 *  rollback: the older code usually still works, so it stays ready); rejects with the reason it is not. */
async function check(): Promise<string[]> {
  const payload = await getPayload({ config })
  const db = payload.db as unknown as Adapter
  const pool = db.pool
  if (!pool) throw new Error('database pool not initialised')
  await pool.query('select 1')
  // Every table the app's collections and globals need (Payload's own schema of them) must exist: an app
  // whose schema was never migrated (Payload pushes it only in development) would fail on every page.
  const needed = Object.keys(db.tables ?? {})
  if (needed.length > 0) {
    const sql = 'select table_name as name from information_schema.tables where table_schema = $1'
    const present = new Set((await pool.query(sql, [db.schemaName || 'public'])).rows.map((r) => r.name))
    const missing = needed.filter((name) => !present.has(name))
    if (missing.length > 0) {
      const some = missing.slice(0, 5).join(', ') + (missing.length > 5 ? ', ...' : '')
      throw new Error(`the database lacks ${missing.length} table(s) the app needs (${some}): no migration ` +
        'created them; create one with payload migrate:create and deploy it')
    }
  }
  if (process.env.VPSKIT_MIGRATIONS === undefined) return []
  const bundled = process.env.VPSKIT_MIGRATIONS.split(',').filter(Boolean)
  let applied: string[] = []
  try {
    applied = (await pool.query('select name from payload_migrations')).rows.map((r) => r.name)
  } catch {
    // no payload_migrations table: nothing has been applied yet
  }
  const pending = bundled.filter((name) => !applied.includes(name))
  if (pending.length > 0) {
    throw new Error(`database schema is behind the code: ${pending.length} pending migration(s): ${pending.join(', ')}`)
  }
  const unknown = applied.filter((name) => name !== 'dev' && !bundled.includes(name))
  return unknown.length > 0 ? [`the database has migrations this version does not bundle: ${unknown.join(', ')}`] : []
}

export async function GET(): Promise<Response> {
  const headers = { 'Cache-Control': 'no-store' }
  const version = process.env.APP_VERSION || 'unknown'
  try {
    const checking = check()
    checking.catch(() => {}) // a late rejection after the timeout must not be unhandled
    const warnings = await Promise.race([
      checking,
      new Promise<never>((_, reject) => {
        setTimeout(() => reject(new Error(`database check timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS).unref?.()
      }),
    ])
    return Response.json({ status: 'ready', version, ...(warnings.length ? { warnings } : {}) }, { headers })
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    return Response.json({ status: 'unavailable', reason, version }, { status: 503, headers })
  }
}
