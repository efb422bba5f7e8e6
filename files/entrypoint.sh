#!/bin/sh
# vpskit entrypoint for the app container: wait for the database (bounded retries with backoff), then
# exec the server so it gets signals directly. Pending Payload migrations are applied by the app itself
# at boot (the postgres adapter's prodMigrations, run from instrumentation.ts) before it reports ready.
set -eu

attempts="${DB_WAIT_ATTEMPTS:-30}"
delay=1
i=1
while ! node -e '
  const u = new URL(process.env.DATABASE_URI);
  const s = require("net").connect(Number(u.port || 5432), u.hostname);
  s.setTimeout(3000, () => process.exit(1));
  s.on("connect", () => process.exit(0)).on("error", () => process.exit(1));
' 2>/dev/null; do
  if [ "$i" -ge "$attempts" ]; then
    echo "vpskit: database not reachable after $attempts attempts; giving up (check the db service)" >&2
    exit 1
  fi
  echo "vpskit: waiting for the database (attempt $i/$attempts, next in ${delay}s)" >&2
  sleep "$delay"
  i=$((i + 1))
  [ "$delay" -lt 8 ] && delay=$((delay * 2))
done

exec "$@"
