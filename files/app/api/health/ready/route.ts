// vpskit readiness route: copy to src/app/api/health/ready/route.ts. `select 1` through Payload's own
// database pool, bounded by a short timeout: 200 when the app can serve, 503 with the reason otherwise.
// The compose healthcheck and the deploy's wait use it. Needs @payloadcms/db-postgres.
import config from '@payload-config'
import { getPayload } from 'payload'

export const dynamic = 'force-dynamic'

const TIMEOUT_MS = 2000

async function checkDatabase(): Promise<void> {
  const payload = await getPayload({ config })
  const pool = (payload.db as unknown as { pool?: { query: (sql: string) => Promise<unknown> } }).pool
  if (!pool) throw new Error('database pool not initialised')
  await pool.query('select 1')
}

export async function GET(): Promise<Response> {
  const headers = { 'Cache-Control': 'no-store' }
  const version = process.env.APP_VERSION || 'unknown'
  try {
    const check = checkDatabase()
    check.catch(() => {}) // a late rejection after the timeout must not be unhandled
    await Promise.race([
      check,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`database check timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS).unref?.()),
    ])
    return Response.json({ status: 'ready', version }, { headers })
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    return Response.json({ status: 'unavailable', reason, version }, { status: 503, headers })
  }
}
