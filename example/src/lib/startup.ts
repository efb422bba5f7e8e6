import { getPayload } from './payload'

const RETRY_MS = 5000

/**
 * Initialise Payload at server start (Node.js runtime only, see instrumentation.ts).
 * With NODE_ENV=production this applies pending migrations (prodMigrations).
 *
 * If the database is unreachable at boot we must NOT throw: Next.js would then
 * fail to "prepare" the server and answer 500 to every request, forever.
 * Instead the server comes up (/api/health 200, /api/health/ready 503) and
 * initialisation is retried in the background until the database is reachable.
 * A migration that fails still stops the process (Payload calls process.exit(1)).
 */
export async function initPayloadAtStartup(): Promise<void> {
  const attempt = async (n: number): Promise<boolean> => {
    try {
      await getPayload()
      if (n > 1) console.info(`[startup] Payload initialised (attempt ${n})`)
      return true
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err)
      console.error(
        `[startup] Payload init failed (attempt ${n}): ${reason}; retrying in ${RETRY_MS / 1000} s`,
      )
      return false
    }
  }

  if (await attempt(1)) return

  void (async () => {
    for (let n = 2; ; n++) {
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS))
      if (await attempt(n)) return
    }
  })()
}
