// @ts-nocheck
/* eslint-disable */
// Added by vpskit to the image it builds, not to your sources ({{ route }}). The one-shot migration runner of a
// release (this same image: /usr/local/bin/vpskit-migrate.js) starts the app's server on 127.0.0.1 with a token
// only it knows and asks this route to apply the app's migrations, before the version gets traffic. Every other
// container answers 404: VPSKIT_MIGRATE_TOKEN is set in none of them.
import { getPayload } from 'payload'

import config from '{{ config }}'
import { migrations } from '{{ migrations }}'

export const dynamic = 'force-dynamic'

export async function POST(request: Request): Promise<Response> {
  const token = process.env.VPSKIT_MIGRATE_TOKEN
  if (!token || request.headers.get('x-vpskit-migrate') !== token) {
    return new Response('Not Found', { status: 404 })
  }
  // As `payload migrate` does: no onInit (it may read tables the migrations create). A failing migration is
  // rolled back and ends the process (Payload's own handling), which the runner reports.
  const payload = await getPayload({ config, disableOnInit: true })
  await payload.db.migrate({ migrations })
  return Response.json({ ok: true, migrations: migrations.map((m) => m.name) })
}
