// vpskit's Next.js cache handler (page_cache = "shared"), added to the build by vpskit, not to your sources: the
// build sets NEXT_CACHE_HANDLER_PATH to it, so Next.js traces it into the standalone output and the server loads it.
//
// Next keeps its page and data cache per process, and `revalidatePath`/`revalidateTag` (Payload's website template
// calls them from collection hooks) mark entries stale only in the process that handled the save. vpskit runs
// several: two containers during a release, one per app server. This handler is Next's own file-system cache,
// plus one thing: every tag a process revalidates is written to a small table in the app's PostgreSQL
// (vpskit_cache_tags), and every process reads the rows changed since its last look once a second into Next's
// own tag manifest. An edit saved on one instance is fresh on every instance about a second later; the pages
// themselves stay in each process's cache, as without this handler.
'use strict'
const FileSystemCache = require('next/dist/server/lib/incremental-cache/file-system-cache.js').default
const { tagsManifest } = require('next/dist/server/lib/incremental-cache/tags-manifest.external.js')

const POLL_MS = Number(process.env.VPSKIT_CACHE_POLL_MS || 1000)
// Not while `next build` runs (its database, when it has one, is a throwaway): only the server shares.
const building = process.env.NEXT_PHASE === 'phase-production-build'
const url = building ? '' : process.env.DATABASE_URI || process.env.DATABASE_URL
const state = globalThis.__vpskitCache || (globalThis.__vpskitCache = { pool: null, ready: null, seen: 0, said: '' })

function say(line) {
  if (state.said !== line) console.error(`vpskit cache: ${line}`) // a failure is said once, not every second
  state.said = line
}

function pool() {
  if (!state.pool) {
    const { Pool } = require('pg')
    state.pool = new Pool({ connectionString: url, max: 1, idleTimeoutMillis: 60000, connectionTimeoutMillis: 5000,
      allowExitOnIdle: true })
    state.pool.on('error', (err) => say(`the database connection failed (${err.code || err.message})`))
  }
  return state.pool
}

function ready() {
  if (!state.ready) {
    state.ready = pool()
      .query(
        'create sequence if not exists vpskit_cache_tags_seq; ' +
          'create table if not exists vpskit_cache_tags (tag text primary key, stale double precision, ' +
          'expired double precision, seq bigint not null)',
      )
      .catch((err) => {
        state.ready = null // tried again next time
        throw err
      })
  }
  return state.ready
}

// The rows changed since the last look (a few before it too: merging one twice changes nothing), into the manifest.
async function poll() {
  await ready()
  const { rows } = await pool().query(
    'select tag, stale, expired, seq from vpskit_cache_tags where seq > $1 order by seq',
    [state.seen - 50],
  )
  for (const row of rows) {
    const mine = tagsManifest.get(row.tag) || {}
    const theirs = { stale: row.stale ?? undefined, expired: row.expired ?? undefined }
    if ((theirs.stale ?? 0) > (mine.stale ?? 0) || (theirs.expired ?? 0) > (mine.expired ?? 0)) {
      tagsManifest.set(row.tag, { ...mine, ...theirs })
    }
    state.seen = Math.max(state.seen, Number(row.seq))
  }
  if (state.said) say('') // working again
}

if (url && !state.timer) {
  state.timer = setInterval(() => poll().catch((err) => say(`could not read the shared tags (${err.message})`)), POLL_MS)
  state.timer.unref()
}

class VpskitCacheHandler extends FileSystemCache {
  async revalidateTag(tags, durations) {
    await super.revalidateTag(tags, durations)
    if (!url) return
    const list = typeof tags === 'string' ? [tags] : tags
    try {
      await ready()
      for (const tag of list) {
        const entry = tagsManifest.get(tag) || {}
        await pool().query(
          'insert into vpskit_cache_tags (tag, stale, expired, seq) values ($1, $2, $3, nextval(\'vpskit_cache_tags_seq\')) ' +
            'on conflict (tag) do update set stale = excluded.stale, expired = excluded.expired, seq = excluded.seq',
          [tag, entry.stale ?? null, entry.expired ?? null],
        )
      }
    } catch (err) {
      say(`could not share the revalidation of ${list.join(', ')} (${err.message}): other instances keep theirs`)
    }
  }
}

module.exports = VpskitCacheHandler
