/**
 * Runs once when the Next.js server starts: initialises Payload so that the
 * production migrations run at boot rather than on the first request.
 *
 * Keep the import inside the NEXT_RUNTIME check: this file is also compiled for
 * the edge runtime, and the bundler drops the branch only in this form (an early
 * `return` would still pull Payload, and Node built-ins, into the edge bundle).
 */
export async function register(): Promise<void> {
  if (process.env.NEXT_RUNTIME === 'nodejs') {
    // `next build` may evaluate this file too; the build must not need a database.
    if (process.env.NEXT_PHASE === 'phase-production-build') return
    const { initPayloadAtStartup } = await import('./lib/startup')
    await initPayloadAtStartup()
  }
}
