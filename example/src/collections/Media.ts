import type { CollectionConfig } from 'payload'

import path from 'node:path'
import { fileURLToPath } from 'node:url'

const dirname = path.dirname(fileURLToPath(import.meta.url))

export const Media: CollectionConfig = {
  slug: 'media',
  access: {
    // Files are served publicly from /api/media/file/<filename>.
    read: () => true,
  },
  fields: [
    {
      name: 'alt',
      type: 'text',
    },
  ],
  upload: {
    // Set MEDIA_DIR in production: the fallback is resolved relative to the
    // source tree at build time, which is not where the standalone server runs.
    staticDir: process.env.MEDIA_DIR || path.resolve(dirname, '../../media'),
    // No imageSizes / focal point cropping: sharp is intentionally not installed.
  },
}
