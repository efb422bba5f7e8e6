import type { CollectionAfterChangeHook, CollectionAfterDeleteHook } from 'payload'

import { revalidatePath } from 'next/cache'

// The posts page is listed again on its next request after a post changes (Payload's website template does the
// same from its collection hooks). Outside a request (a script, a migration) there is no cache to revalidate.
function revalidate(logger: { warn: (msg: string) => void }): void {
  try {
    revalidatePath('/posts')
  } catch (err) {
    logger.warn(`posts page not revalidated: ${(err as Error).message}`)
  }
}

export const revalidatePostsAfterChange: CollectionAfterChangeHook = ({ doc, req }) => {
  revalidate(req.payload.logger)
  return doc
}

export const revalidatePostsAfterDelete: CollectionAfterDeleteHook = ({ doc, req }) => {
  revalidate(req.payload.logger)
  return doc
}
