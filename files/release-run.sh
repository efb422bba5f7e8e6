#!/usr/bin/env bash
# One release attempt of one app, as release.sh launched it (detached: it finishes without the client).
#
#   release-run.sh APP_DIR ID      parameters in APP_DIR/releases/attempts/ID/params
#
# Steps, each undone on failure before the switch: wait for the app's release lock; put the attempt's files
# in place; the database service up (recreated only when its own settings changed); pending migrations; a
# new app container beside the serving one; wait until it answers ready; switch the proxy to it; drain and
# stop the old one; record the release. Exit status and one log line per attempt in releases/.
set -euo pipefail

APP_DIR=${1:?}; ID=${2:?}
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$APP_DIR"
attempt="releases/attempts/$ID"
# VERSION TIMEOUT KEEP DRAIN LOCK_WAIT HASH WHO MIGRATE KIND [FROM RELEASE], as release.sh wrote them; MIGRATE:
# the migrations the one-shot runner applies and must leave recorded, comma-separated (empty: no runner);
# RELEASE: the kept release a rollback goes back to
# shellcheck source=/dev/null
. "$attempt/params"
: "${VERSION:?}" "${TIMEOUT:?}" "${KEEP:?}" "${DRAIN:?}" "${LOCK_WAIT:?}" "${HASH:?}" "${WHO:?}" "${KIND:?}"
# shellcheck source=files/common.sh
. "$HERE/common.sh"
# shellcheck source=files/proxy.sh
. "$HERE/proxy.sh"

START=$SECONDS
# The Payload migrations recorded in the database, in order (nothing when there is no database yet).
applied_migrations() { db_sh 'psql -XAt -c "select name from payload_migrations order by id"' 2>/dev/null || true; }

record_release() { # record_release KEEP ATTEMPT_DIR: the desired state kept for rollback. A release gets the next
  # number; a rollback is the release it went back to (its .env now with today's secrets). Sets RELEASED.
  local keep=$1 n from last old ref project kept versions pending
  desired_hash . > .applied
  from=$(cat current 2>/dev/null || true)
  if [ "$KIND" = rollback ]; then
    n=${RELEASE:?a rollback names the release it goes back to}
    awk -F'\t' -v OFS='\t' -v n="$n" -v c="${HASH:0:12}" '$1 == n {$3 = c} {print}' releases/index > releases/index.new
    mv releases/index.new releases/index
  else
    last=$(release_numbers | sort -n | tail -1)
    n=$(( ${last:-0} + 1 ))
    printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$VERSION" "${HASH:0:12}" "${from:--}" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
      >> releases/index
  fi
  cp "$2/docker-compose.yml" "releases/$n.yml"
  cp -p "$2/.env" "releases/$n.env"
  cp "$2/proxy-route.caddy" "releases/$n.caddy"
  echo "$n" > current
  RELEASED=$n
  # The kept releases hold today's secrets too: a rotated one is gone from the server's disk, not kept for a rollback.
  for old in $(release_numbers); do
    if [ "$old" != "$n" ] && [ -f "releases/$old.env" ]; then
      # Created unreadable to others (umask), never chmod-ed after the secrets are in it.
      (umask 077 && with_current_secrets "releases/$old.env" .env > "releases/$old.env.new") \
        && mv "releases/$old.env.new" "releases/$old.env"
    fi
  done
  # The newest KEEP releases are kept (and the one serving now, whatever its number).
  kept=$(release_numbers | sort -n | tail -n "$keep"; echo "$n")
  for old in $(release_numbers); do
    grep -qx "$old" <<< "$kept" && continue
    rm -f "releases/$old.yml" "releases/$old.env" "releases/$old.caddy" "releases/$old.migrations"
    awk -F'\t' -v n="$old" '$1 != n' releases/index > releases/index.new && mv releases/index.new releases/index
  done
  # Every other image of the app goes, failed versions included: only kept releases can be rolled back to.
  # The images the newest pushed files name stay: another deploy may have just shipped them to release next.
  project=$(docker compose config --format json | grep -m1 '"name"' | sed 's/.*"name": *"\([^"]*\)".*/\1/')
  versions=$(cut -f2 releases/index)
  pending=$(sed -n 's/^ *image: *"\{0,1\}\([^" ]*\)"\{0,1\} *$/\1/p' next/docker-compose.yml 2>/dev/null || true)
  for ref in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$project" | grep -v ':<none>$'); do
    grep -qxF "${ref##*:}" <<< "$versions" && continue
    grep -qxF "$ref" <<< "$pending" && continue
    docker image rm "$ref" >/dev/null 2>&1 && log "pruned image $ref" || true
  done
  # Migration runners are single-use: their migrations are applied now.
  for ref in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$project-migrate" | grep -v ':<none>$'); do
    docker image rm "$ref" >/dev/null 2>&1 && log "pruned image $ref" || true
  done
}

record_migrations() { # record_migrations RELEASE BEFORE: which migrations this release applied
  local now new
  now=$(applied_migrations)
  new=$(comm -13 <(echo "$2" | sort) <(echo "$now" | sort) | grep . || true)
  if [ -n "$new" ]; then
    echo "$new" > "releases/$1.migrations"
    log "migrations applied by $VERSION: $(echo "$new" | tr '\n' ' ')"
  elif [ -n "$now" ]; then
    log "no migration to apply ($(echo "$now" | wc -l) recorded in the database)"
  fi
}

APP=$(basename "$APP_DIR")
previous=$(release_version "$(cat current 2>/dev/null || true)")  # the version serving before, for what is said
REASON=""
log() { echo "vpskit release: $*" >&2; }
compose_up() { # compose_up ARGS...: `docker compose up -d` without its "Running" lines; compose's status
  docker compose up -d "$@" 2>&1 | { grep -v -e ' Running$' || true; } >&2
  return "${PIPESTATUS[0]}"
}
finish() { # finish STATUS: the release log line and the status file `follow` waits for
  local result=ok
  [ "$1" = 0 ] || result=failed
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$VERSION" "${HASH:0:12}" "$WHO" \
    "${KIND}:$result" "$((SECONDS - START))" "${REASON:--}" >> releases/log
  # Written whole, then renamed: `follow` must never read an empty status (it would pass for success).
  echo "$1" > "$attempt.status.new" && mv "$attempt.status.new" "$attempt.status"
  rm -rf "$attempt"
  # shellcheck disable=SC2012 # attempt files are named by time
  ls -1t releases/attempts/*.log 2>/dev/null | tail -n +21 | while read -r f; do rm -f "$f" "${f%.log}.status" "${f%.log}.pid"; done
  # After the status, and without the app's lock: a slow webhook never holds up the deploy that follows this
  # release, nor another release, restore or stop of the app (notify_releases).
  flock -u 8 2>/dev/null || true
  "$HERE/notify.sh" release "$([ "$1" = 0 ] && echo OK || echo FAILED)" \
    "$KIND of $VERSION $result after $((SECONDS - START))s${REASON:+: $REASON}" >/dev/null 2>&1 || true
}
FINISHED=""
fail() { REASON=$1; log "$1"; finish 1; FINISHED=1; exit 1; }
# Any other way out (a command failing under set -e) is a failed attempt too; its line is in the log above.
trap 'rc=$?; [ -n "$FINISHED" ] || { REASON=${REASON:-"the release script stopped (exit $rc; see its log)"}; finish "$rc"; }' EXIT

# --- Lock: one release (or restore, rollback, stop) of this app at a time
take_lock "$LOCK_WAIT" "$KIND of $VERSION by $WHO" release || fail "$LOCK_REFUSAL"
rm -f .vpskit-stopped  # stopped on purpose (tasks/stop.py) until a release: the health timer may start it again

# --- The attempt's files in place; what was in place before comes back on any failure before the switch
live_app=$(cat releases/.serving 2>/dev/null || true)
cp docker-compose.yml "$attempt/previous.yml" 2>/dev/null || true
cp .env "$attempt/previous.env" 2>/dev/null || true
cp proxy-route.caddy "$attempt/previous.caddy" 2>/dev/null || true
put_back() {
  if [ -f "$attempt/previous.yml" ]; then cp "$attempt/previous.yml" docker-compose.yml; fi
  if [ -f "$attempt/previous.env" ]; then cp -p "$attempt/previous.env" .env; fi
  if [ -f "$attempt/previous.caddy" ]; then cp "$attempt/previous.caddy" proxy-route.caddy; fi
}
cp "$attempt/docker-compose.yml" docker-compose.yml
cp -p "$attempt/.env" .env
cp "$attempt/proxy-route.caddy" proxy-route.caddy
route="$attempt/proxy-route.caddy"

# --- Leftovers of an attempt that was cut short: every app container but the serving one goes
if [ -n "$live_app" ] && [ "$(docker inspect -f '{{.State.Running}}' "$live_app" 2>/dev/null)" != true ]; then
  # Recreated by hand (compose down/up): a running container of the app is what serves now (the route's
  # fallback reaches it by the app's alias).
  live_app=$(docker compose ps -q --status running app 2>/dev/null | head -1)
  [ -z "$live_app" ] || live_app=$(docker inspect -f '{{.Name}}' "$live_app" | tr -d /)
fi
for c in $(docker compose ps -a -q app 2>/dev/null); do
  name=$(docker inspect -f '{{.Name}}' "$c"); name=${name#/}
  if [ "$name" != "$live_app" ]; then log "removing $name, left by an earlier attempt"; docker rm -f "$c" >/dev/null; fi
done

# Which services this host runs: both (one server), the app only (app server), the database only (db server).
services=$(docker compose config --services)
has() { grep -qx "$1" <<< "$services"; }

# --- Database: recreated only when its own image or settings changed (the one announced interruption)
wait_db() { # wait_db SECONDS: until the db service is healthy; ends early when its container exits or keeps
  # restarting (its last log lines shown)
  local start=$SECONDS id since rc0
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  id=$(docker compose ps -a -q db 2>/dev/null | head -1)
  rc0=$(restarts "$id")
  until is_healthy "$(service_state db)"; do
    if [ -n "$id" ] && container_failure "$id" "$since" "$rc0"; then
      log "the database container $FAILURE; its last log lines:"
      docker logs --tail 15 "$id" 2>&1 | sed 's/^/    | /' >&2
      return 1
    fi
    (( SECONDS - start < $1 )) || return 1
    sleep 1
  done
}
db_back() { # db_back WHY: the previous files back and, when this release replaced the database, the previous one
  # started again and waited for; ends the attempt with WHY and what serves now (true in both outcomes)
  put_back
  if [ -n "$before" ] && [ "$before" != "$(docker compose ps -q db 2>/dev/null)" ]; then
    log "starting the database again on its previous settings"
    if compose_up --no-deps db && wait_db "$TIMEOUT"; then
      fail "$1: version $VERSION was not released; the database is back on its previous settings and ${previous:-nothing} keeps serving"
    fi
    fail "$1: version $VERSION was not released, and the database did not start again on its previous settings either (above): the site is without its database until that is fixed"
  fi
  fail "$1: version $VERSION was not released, ${previous:-nothing} keeps serving"
}
if has db; then
  before=$(docker compose ps -q db 2>/dev/null || true)
  compose_up --no-deps db || db_back "compose could not start the database service (its message above)"
  if [ -n "$before" ] && [ "$before" != "$(docker compose ps -q db)" ]; then
    log "the database service changed: it was restarted (the app is briefly without its database)"
  fi
  wait_db "$TIMEOUT" || db_back "the database did not become healthy"
fi
applied_before=$(applied_migrations)

# --- Migrations, while the serving version keeps serving
unrecorded() { comm -23 <(tr , '\n' <<< "$MIGRATE" | sort) <(applied_migrations | sort) | paste -sd' '; }
if [ -n "${MIGRATE:-}" ]; then
  log "applying migrations before version $VERSION gets traffic (${previous:-nothing} is serving meanwhile)"
  out=$(mktemp); set +e
  for run in first second; do  # a second run only after one that exited 0 yet left a migration unrecorded
    run_migrations "$out"
    which=$(grep -o 'Error running migration [A-Za-z0-9_.-]*' "$out" | tail -1 | awk '{print $NF}')
    missing=""; [ "$STATUS" != 0 ] || [ -n "$which" ] || missing=$(unrecorded)
    if [ -z "$missing" ] || [ "$run" = second ]; then break; fi
    log "the migration runner ended (exit 0) without recording $missing in the database: running it once more"
  done
  set -e; rm -f "$out"
  # Payload's own error line counts even when the exit status says 0.
  if [ "$STATUS" != 0 ] || [ -n "$which" ]; then
    put_back
    fail "migration ${which:-run} failed (Payload's output above; exit $STATUS): version $VERSION was not released, ${previous:-nothing} keeps serving, and the failed migration was rolled back, not recorded"
  fi
  if [ -n "$missing" ]; then
    put_back
    fail "the migration runner ended twice (exit 0) without recording $missing in the database (its output above): version $VERSION was not released, ${previous:-nothing} keeps serving"
  fi
fi

if ! has app; then  # a db server: its database (and the migrations above) is all it serves
  record_release "$KEEP" "$attempt"
  record_migrations "$RELEASED" "$applied_before"
  log "database of version $VERSION is serving (released in $((SECONDS - START))s)"
  finish 0
  FINISHED=1
  exit 0
fi

# --- The new app container, beside the serving one and never published
scale=1; [ -z "$live_app" ] || scale=2
if ! compose_up --no-deps --no-recreate --scale "app=$scale" app; then
  for c in $(docker compose ps -a -q app); do
    [ "$(docker inspect -f '{{.Name}}' "$c")" = "/$live_app" ] || docker rm -f "$c" >/dev/null
  done
  put_back
  fail "compose could not create the new app container (its message above): version $VERSION was not released; ${previous:-nothing} keeps serving"
fi
new=""
for c in $(docker compose ps -a -q app); do
  name=$(docker inspect -f '{{.Name}}' "$c"); name=${name#/}
  [ "$name" = "$live_app" ] || new=$name
done
[ -n "$new" ] || { put_back; fail "compose started no new app container for version $VERSION: ${previous:-nothing} keeps serving"; }
port=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$new" | sed -n 's/^PORT=//p')
log "started $new (version $VERSION) beside ${live_app:-nothing}; waiting up to ${TIMEOUT}s for it to answer ready"

throw_away() { # throw_away REASON: the new container goes, the previous files come back
  docker logs --tail 25 "$new" 2>&1 | sed 's/^/    | /' >&2 || true
  docker rm -f "$new" >/dev/null 2>&1 || true
  put_back
  if [ -n "$live_app" ]; then
    fail "$1: version $VERSION was not released; ${previous:-the earlier release} keeps serving (container $live_app, untouched)"
  fi
  fail "$1: version $VERSION was not released; there was no earlier release serving"
}
ready_via=app
if [ -s "$route" ]; then ready_via=proxy; fi
if ! wait_ready "$new" "$port" "$TIMEOUT" "$ready_via"; then throw_away "$NOT_READY"; fi

# Docker's verdict on a container (one without a healthcheck counts as healthy)
docker_health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}' "$1" 2>/dev/null; }

# --- Switch, drain, stop
if [ -s "$route" ]; then
  route_to "$route" "$APP" "$new:$port" || throw_away "the proxy refused the new route (its reason above)"
  log "proxy switched to $new"
fi
echo "$new" > releases/.serving
if [ -n "$live_app" ]; then
  if [ -s "$route" ]; then
    waited=0
    sleep 1
    while [ "$(in_flight "$live_app:$port")" -gt 0 ] && [ "$waited" -lt "$DRAIN" ]; do sleep 1; waited=$((waited + 1)); done
  else
    # An external proxy (Traefik's Docker provider) routes only to containers Docker reports healthy, and
    # notices containers that go: the old one stops once the new one is healthy and the drain time passed.
    waited=0
    until [ "$(docker_health "$new")" = healthy ] || [ "$waited" -ge "$TIMEOUT" ]; do sleep 1; waited=$((waited + 1)); done
    sleep "$DRAIN"
  fi
  docker stop -t 30 "$live_app" >/dev/null 2>&1 || true
  docker rm -f "$live_app" >/dev/null 2>&1 || true
  log "stopped $live_app (${previous:-its version}) after draining"
fi

# --- Docker's own healthcheck agrees before the release ends: `docker ps`, tasks/health.py and the next deploy
# read its verdict, which says "starting" until its first check (its interval is 10 s). Bounded by two checks;
# vpskit's ready check has passed already, so a late verdict is reported, not a failure.
waited=0
while [ "$(docker_health "$new")" = starting ] && [ "$waited" -lt 30 ]; do sleep 1; waited=$((waited + 1)); done
verdict=$(docker_health "$new")
[ "$verdict" = healthy ] || log "Docker's healthcheck says $new is ${verdict:-unknown} after ${waited}s (vpskit's ready check passed)"

# --- Record
record_release "$KEEP" "$attempt"
record_migrations "$RELEASED" "$applied_before"
if [ "$KIND" = rollback ]; then
  log "rolled back from ${FROM:-none} to $VERSION (release $RELEASED, with today's secrets)"
else
  log "version $VERSION is serving as release $RELEASED (released in $((SECONDS - START))s)"
fi
finish 0
FINISHED=1
