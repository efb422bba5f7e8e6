import { unstable_cache } from 'next/cache'
import { connection } from 'next/server'

import { getPayload } from '../../../lib/payload'

// The latest posts, cached by Next.js until a post changes (the Posts hooks revalidate /posts), as Payload's
// website template caches its pages: rendered per request, its data from the cache. On several instances, vpskit's
// shared cache handler makes an edit saved on one fresh on all of them.
const latest = unstable_cache(
  async () => {
    const payload = await getPayload()
    const found = await payload.find({ collection: 'posts', depth: 0, limit: 20, sort: '-createdAt' })
    return { at: new Date().toISOString(), titles: found.docs.map((post) => post.title) }
  },
  ['latest-posts'],
  { revalidate: 3600 },
)

export default async function PostsPage() {
  await connection() // rendered per request (no database needed while `next build` runs)
  const { at, titles } = await latest()
  return (
    <main>
      <h1>Latest posts</h1>
      <ul>
        {titles.map((title, i) => (
          <li key={i} className="post">
            {title}
          </li>
        ))}
      </ul>
      <p>
        Listed at <time id="listed-at">{at}</time>
      </p>
    </main>
  )
}
