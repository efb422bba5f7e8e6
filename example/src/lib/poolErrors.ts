import type { Payload } from 'payload'

type PgPoolLike = {
  on: (event: 'error', listener: (err: Error) => void) => unknown
}

const ATTACHED = Symbol.for('example.poolErrorHandlerAttached')

/**
 * node-postgres' Pool emits 'error' when an *idle* client loses its connection
 * (e.g. postgres restarts or goes away). An 'error' event with no listener is
 * thrown by EventEmitter and kills the Node process, so always attach one.
 * Idempotent: safe to call from onInit and again after every getPayload().
 */
export function attachPoolErrorHandler(payload: Payload): void {
  const pool = (payload.db as unknown as { pool?: PgPoolLike & { [ATTACHED]?: boolean } }).pool
  if (!pool || pool[ATTACHED]) return
  pool[ATTACHED] = true
  pool.on('error', (err: Error) => {
    payload.logger.warn(
      { err: { message: err.message, code: (err as { code?: string }).code } },
      'postgres pool: idle client error (database unreachable?); continuing',
    )
  })
}
