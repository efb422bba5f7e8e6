/**
 * Runs once when the Next.js server starts. Initialising Payload here means the
 * production migrations (prodMigrations, NODE_ENV=production) are applied at boot
 * instead of on the first request.
 */
export async function register(): Promise<void> {
  if (process.env.NEXT_RUNTIME !== 'nodejs') return
  // `next build` may load this file too; it must not need a database.
  if (process.env.NEXT_PHASE === 'phase-production-build') return

  const { getPayload } = await import('./lib/payload')
  await getPayload()
}
