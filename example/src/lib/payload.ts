import config from '@payload-config'
import { getPayload as getPayloadBase, type Payload } from 'payload'

import { attachPoolErrorHandler } from './poolErrors'

/**
 * getPayload() plus the pool 'error' listener. Payload only runs onInit on the
 * first initialisation attempt of a cached instance, so if that attempt failed
 * (database down at boot) the listener is attached here instead.
 */
export async function getPayload(): Promise<Payload> {
  const payload = await getPayloadBase({ config })
  attachPoolErrorHandler(payload)
  return payload
}
