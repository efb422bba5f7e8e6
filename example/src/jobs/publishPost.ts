import type { TaskConfig } from 'payload'

import { appVersion } from '../lib/version'

/**
 * Publishes a post at a time: queued with `waitUntil` by POST /api/posts/schedule, run by whichever process
 * runs the app's jobs (on a vpskit server: its one jobs worker). `seconds` makes the task take that long before
 * it writes, so a test can release a new version while it runs. `publishedBy` says which version ran it.
 */
export const publishPost: TaskConfig<'publishPost'> = {
  slug: 'publishPost',
  inputSchema: [
    { name: 'title', type: 'text', required: true },
    { name: 'seconds', type: 'number' },
  ],
  outputSchema: [{ name: 'post', type: 'text' }],
  // A failed run is not retried: a test counts the posts it made.
  retries: 0,
  handler: async ({ input, req }) => {
    const seconds = Math.min(Number(input.seconds) || 0, 120)
    if (seconds > 0) await new Promise((resolve) => setTimeout(resolve, seconds * 1000))
    const post = await req.payload.create({
      collection: 'posts',
      data: { title: input.title, publishedBy: `job ${appVersion()}` },
      req,
    })
    req.payload.logger.info(`publishPost: published "${input.title}" as post ${post.id}`)
    return { output: { post: String(post.id) } }
  },
}
