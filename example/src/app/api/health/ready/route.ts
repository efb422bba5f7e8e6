import { getPayload } from '@/lib/payload'
import { appVersion } from '@/lib/version'

// Readiness: `select 1` through Payload's own database pool, bounded by a short timeout.
export const dynamic = 'force-dynamic'

const TIMEOUT_MS = 2000

type Queryable = { query: (sql: string) => Promise<unknown> }

async function checkDatabase(): Promise<void> {
  const payload = await getPayload()
  const pool = (payload.db as unknown as { pool?: Queryable }).pool
  if (!pool) throw new Error('database pool not initialised')
  await pool.query('select 1')
}

function timeout(ms: number): Promise<never> {
  return new Promise((_, reject) => {
    const t = setTimeout(() => reject(new Error(`database check timed out after ${ms} ms`)), ms)
    t.unref?.()
  })
}

export async function GET(): Promise<Response> {
  const headers = { 'Cache-Control': 'no-store' }
  try {
    const check = checkDatabase()
    check.catch(() => {}) // a late rejection after the timeout must not be unhandled
    await Promise.race([check, timeout(TIMEOUT_MS)])
    return Response.json({ status: 'ready', version: appVersion() }, { headers })
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    return Response.json(
      { status: 'unavailable', reason: reason || 'database unreachable', version: appVersion() },
      { status: 503, headers },
    )
  }
}
