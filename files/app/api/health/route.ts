// vpskit liveness route: copy to src/app/api/health/route.ts. Never touches the database, so a database
// outage does not make Docker restart the app. APP_VERSION is set by the deploy.
export const dynamic = 'force-dynamic'

export function GET(): Response {
  return Response.json(
    { status: 'ok', version: process.env.APP_VERSION || 'unknown', uptime: Math.round(process.uptime()) },
    { headers: { 'Cache-Control': 'no-store' } },
  )
}
