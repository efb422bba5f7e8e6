import type { CollectionConfig, PayloadRequest } from 'payload'

import { revalidatePostsAfterChange, revalidatePostsAfterDelete } from './revalidatePosts'

// POST /api/posts/schedule {"title": "...", "at": "2026-12-07T12:00:00Z", "seconds": 0}: publishes a post at a
// time through Payload's jobs queue (the publishPost task), as Payload's scheduled publishing does.
async function schedule(req: PayloadRequest): Promise<Response> {
  if (!req.user) return Response.json({ errors: [{ message: 'You are not allowed to perform this action.' }] }, { status: 403 })
  const body = (await req.json?.()) ?? {}
  if (typeof body.title !== 'string' || !body.title) {
    return Response.json({ errors: [{ message: 'title is required' }] }, { status: 400 })
  }
  const job = await req.payload.jobs.queue({
    task: 'publishPost',
    input: { title: body.title, seconds: Number(body.seconds) || 0 },
    waitUntil: body.at ? new Date(body.at) : undefined,
    req,
  })
  return Response.json({ job: job.id }, { status: 201 })
}

export const Posts: CollectionConfig = {
  slug: 'posts',
  admin: {
    useAsTitle: 'title',
  },
  access: {
    // Published content is public; create/update/delete need a logged-in user (Payload default).
    read: () => true,
  },
  endpoints: [{ path: '/schedule', method: 'post', handler: schedule }],
  hooks: {
    afterChange: [revalidatePostsAfterChange],
    afterDelete: [revalidatePostsAfterDelete],
  },
  fields: [
    {
      name: 'title',
      type: 'text',
      required: true,
    },
    {
      name: 'body',
      type: 'richText',
    },
    {
      // Who published it: empty for an editor's save, "job <version>" for the scheduled-publish task.
      name: 'publishedBy',
      type: 'text',
      admin: { readOnly: true },
    },
  ],
}
