import { appVersion } from '@/lib/version'

// Liveness: answers as long as the Node process serves requests. Never touches the database.
export const dynamic = 'force-dynamic'

export function GET(): Response {
  return Response.json(
    {
      status: 'ok',
      version: appVersion(),
      uptime: Math.round(process.uptime() * 1000) / 1000,
    },
    { headers: { 'Cache-Control': 'no-store' } },
  )
}
