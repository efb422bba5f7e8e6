// @ts-nocheck
/* eslint-disable */
// Added by vpskit to the image it builds, not to your sources ({{ route }}). vpskit's jobs worker (one per app, on
// one server) asks the serving app container here, one request at a time, to queue what the app's schedules have
// due and run the jobs whose time has come: Payload's `jobs:run --handle-schedules`, in the process that already
// serves. It answers 404 to anything without the worker's token (derived from PAYLOAD_SECRET, which only the
// server's root-only .env and the app's containers hold).
import { createHmac, timingSafeEqual } from 'node:crypto'
import { getPayload } from 'payload'

import config from '{{ config }}'

export const dynamic = 'force-dynamic'

const LIMIT = 10 // jobs run per request, as Payload's own autoRun default

function allowed(request: Request): boolean {
  const secret = process.env.PAYLOAD_SECRET
  const given = Buffer.from(request.headers.get('x-vpskit-jobs') || '')
  if (!secret) return false
  const token = Buffer.from(createHmac('sha256', secret).update('vpskit-jobs').digest('hex'))
  return given.length === token.length && timingSafeEqual(given, token)
}

export async function POST(request: Request): Promise<Response> {
  if (!allowed(request)) return new Response('Not Found', { status: 404 })
  const payload = await getPayload({ config })
  if (!payload.config.jobs?.enabled) return Response.json({ enabled: false })
  let queued = 0
  if (payload.config.jobs.scheduling) {
    const scheduled = await payload.jobs.handleSchedules({ allQueues: true })
    queued = Array.isArray(scheduled?.queued) ? scheduled.queued.length : 0
  }
  const result = await payload.jobs.run({ allQueues: true, limit: LIMIT })
  const statuses = Object.values(result?.jobStatus ?? {}).map((s: any) => s?.status)
  // The oldest job still waiting (due or not), for tasks/health.py.
  const waiting = await payload.find({
    collection: 'payload-jobs',
    depth: 0,
    limit: 1,
    overrideAccess: true,
    pagination: true,
    sort: 'createdAt',
    where: { and: [{ completedAt: { exists: false } }, { hasError: { not_equals: true } }] },
  })
  return Response.json({
    enabled: true,
    queued,
    ran: statuses.length,
    failed: statuses.filter((s) => s === 'error' || s === 'error-reached-max-retries').length,
    waiting: waiting.totalDocs,
    oldest: waiting.docs[0]?.createdAt ?? '',
    oldestDue: waiting.docs[0]?.waitUntil ?? '',
  })
}
