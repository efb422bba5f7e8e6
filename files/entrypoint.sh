#!/bin/sh
# vpskit entrypoint for the app container: wait briefly for the database, then exec the server so it gets
# signals directly. Compose starts the app only once the db service is healthy, so a database this
# container still cannot reach after a few tries is a configuration error: say so and exit (the deploy's
# wait sees the exit within seconds) rather than retry for minutes.
set -eu

attempts="${DB_WAIT_ATTEMPTS:-5}"
delay=1
i=1
while ! reason=$(node -e '
  const raw = process.env.DATABASE_URI || process.env.DATABASE_URL;
  if (!raw) { console.log("neither DATABASE_URI nor DATABASE_URL is set"); process.exit(2); }
  const u = new URL(raw);
  const where = u.hostname + ":" + (u.port || 5432);
  const s = require("net").connect(Number(u.port || 5432), u.hostname);
  s.setTimeout(3000, () => { console.log("no answer from " + where + " within 3s"); process.exit(1); });
  s.on("connect", () => process.exit(0)).on("error", (e) => { console.log(e.code + " " + where); process.exit(1); });
' 2>&1); do
  if [ "$i" -ge "$attempts" ]; then
    echo "vpskit: cannot reach the database ($reason) after $attempts attempts: check DATABASE_URI/DATABASE_URL in the server's .env and the db service" >&2
    exit 1
  fi
  echo "vpskit: waiting for the database ($reason; attempt $i/$attempts, next in ${delay}s)" >&2
  sleep "$delay"
  i=$((i + 1))
  [ "$delay" -lt 8 ] && delay=$((delay * 2))
done

exec "$@"
