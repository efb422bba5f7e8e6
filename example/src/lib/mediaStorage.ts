import { s3Storage } from '@payloadcms/storage-s3'

/**
 * Where uploads live, chosen by configuration:
 * - no S3_BUCKET: on the app server's disk (MEDIA_DIR, a Docker volume), for one server;
 * - S3_BUCKET set: in S3-compatible object storage through Payload's official adapter, so several app
 *   servers share the same files. vpskit sets S3_BUCKET, S3_ENDPOINT and S3_REGION from its media_* settings;
 *   the keys come from the operator's .env (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY).
 *
 * The adapter's columns (prefix, _object_key) exist in both cases (alwaysInsertFields), so one schema and one
 * list of migrations serve both, and a site can move from one to the other without a migration.
 */
export const mediaStorage = () => {
  const endpoint = process.env.S3_ENDPOINT || undefined
  return s3Storage({
    enabled: Boolean(process.env.S3_BUCKET),
    alwaysInsertFields: true,
    collections: { media: true },
    bucket: process.env.S3_BUCKET || '',
    config: {
      endpoint,
      region: process.env.S3_REGION || 'us-east-1',
      // S3-compatible servers other than AWS (MinIO, Garage, R2, the test bed's) address buckets by path.
      forcePathStyle: Boolean(endpoint),
      credentials: {
        accessKeyId: process.env.S3_ACCESS_KEY_ID || '',
        secretAccessKey: process.env.S3_SECRET_ACCESS_KEY || '',
      },
      // Checksums only where S3 requires them: several S3-compatible servers reject the SDK's default ones.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    },
  })
}
