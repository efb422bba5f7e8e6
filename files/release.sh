#!/usr/bin/env bash
# vpskit releases for one app, run on the server as root by deploy.py and tasks/rollback.py.
#
#   release.sh up APP_DIR VERSION TIMEOUT KEEP [migrate]
#                                                 with `migrate`: first apply the pending Payload migrations
#                                                 with the compose file's one-shot migrate service, while the
#                                                 running version keeps serving; a failing migration ends
#                                                 the release there. Then apply docker-compose.yml and wait
#                                                 until healthy; when the new version does not get ready,
#                                                 put the previous release back and exit 1. On success,
#                                                 record it (and the migrations it applied, in
#                                                 releases/VERSION.migrations) and prune images beyond the
#                                                 KEEP newest releases.
#   release.sh rollback APP_DIR [VERSION] TIMEOUT go back to VERSION (default: the release before the
#                                                 current one)
#   release.sh list APP_DIR                       the recorded releases, oldest first, current marked
#
# Each successful release leaves releases/<version>.yml (its compose file); `current` names the live one.
set -Eeuo pipefail

log() { echo "vpskit release: $*" >&2; }
die() { log "$*"; exit 1; }

HERE=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?usage: release.sh up|rollback|list APP_DIR ...}
APP_DIR=${2:?usage: release.sh up|rollback|list APP_DIR ...}
cd "$APP_DIR" || die "no app at $APP_DIR: deploy first"
mkdir -p releases

# shellcheck source=files/common.sh
. "$HERE/common.sh"  # wait_healthy: the one definition of healthy
# Our own wait rather than `up --wait`: Compose 2.26 returned success with a service still "starting".
up() { docker compose up -d --remove-orphans >&2 || return 1; wait_healthy "$1" release; }
report() { { docker compose ps -a; docker compose logs --no-color --tail 40 app; } >&2 || true; }
# shellcheck disable=SC2012 # by time, oldest first; names are Docker tags (no spaces or newlines)
releases() { ls -1tr releases 2>/dev/null | sed -n 's/\.yml$//p'; }

# The Payload migrations recorded in the database, in order (nothing when there is no database yet).
# shellcheck disable=SC2016 # expanded inside the db container
applied() { docker compose exec -T db sh -c 'psql -XAt -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "select name from payload_migrations order by id"' 2>/dev/null || true; }

migrate() { # migrate: run the migrate service once; its output is Payload's, a failure names the migration
  local out status
  out=$(mktemp)
  log "applying migrations before version $VERSION gets traffic (${previous:-nothing} is serving meanwhile)"
  set +e
  docker compose run --rm -T migrate 2>&1 | tee "$out" >&2
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" != 0 ]; then
    local which
    which=$(grep -o 'Error running migration [A-Za-z0-9_.-]*' "$out" | tail -1 | awk '{print $NF}')
    rm -f "$out"
    # The files on the server describe what runs: the previous release's compose file goes back.
    if [ -n "$previous" ] && [ -f "releases/$previous.yml" ]; then cp "releases/$previous.yml" docker-compose.yml; fi
    die "migration ${which:-run} failed (Payload's output above; exit $status): version $VERSION was not released, ${previous:-nothing} keeps serving, and the failed migration was rolled back, not recorded"
  fi
  rm -f "$out"
}

record() { # record VERSION KEEP
  cat docker-compose.yml .env | sha256sum | cut -c1-64 > .applied
  cp docker-compose.yml "releases/$1.yml"
  touch "releases/$1.yml"
  echo "$1" > current
  local project keep=$2 n ref
  project=$(docker compose config --format json | grep -m1 '"name"' | sed 's/.*"name": *"\([^"]*\)".*/\1/')
  n=$(releases | wc -l)
  for old in $(releases | head -n $(( n > keep ? n - keep : 0 ))); do
    [ "$old" = "$1" ] && continue
    rm -f "releases/$old.yml" "releases/$old.migrations"
  done
  # Every other image of the app goes, failed versions included: only kept releases can be rolled back to.
  for ref in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$project" | grep -v ':<none>$'); do
    releases | grep -qxF "${ref##*:}" && continue
    docker image rm "$ref" >/dev/null 2>&1 && log "pruned image $ref" || true
  done
  # Migration runners are single-use: their migrations are applied now.
  for ref in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$project-migrate" | grep -v ':<none>$'); do
    docker image rm "$ref" >/dev/null 2>&1 && log "pruned image $ref" || true
  done
}

record_migrations() { # record_migrations VERSION BEFORE: which migrations this release applied
  local now new
  now=$(applied)
  new=$(comm -13 <(echo "$2" | sort) <(echo "$now" | sort) | grep . || true)
  if [ -n "$new" ]; then
    echo "$new" > "releases/$1.migrations"
    log "migrations applied by $1: $(echo "$new" | tr '\n' ' ')"
  elif [ -n "$now" ]; then
    log "no migration to apply ($(echo "$now" | wc -l) recorded in the database)"
  fi
}

case "$cmd" in
  up)
    VERSION=${3:?}; TIMEOUT=${4:?}; KEEP=${5:?}; MIGRATE=${6:-}
    previous=$(cat current 2>/dev/null || true)
    before=$(applied)
    if [ "$MIGRATE" = migrate ]; then migrate; fi
    if up "$TIMEOUT"; then
      record "$VERSION" "$KEEP"
      record_migrations "$VERSION" "$before"
      exit 0
    fi
    report
    if [ -n "$previous" ] && [ "$previous" != "$VERSION" ] && [ -f "releases/$previous.yml" ]; then
      log "version $VERSION did not become healthy within ${TIMEOUT}s: rolling back to $previous"
      cp "releases/$previous.yml" docker-compose.yml
      if up "$TIMEOUT"; then
        die "version $VERSION failed its readiness check; rolled back to $previous, which is healthy"
      fi
      die "version $VERSION failed and the rollback to $previous is not healthy either: see the logs above"
    fi
    die "version $VERSION did not become healthy within ${TIMEOUT}s and there is no previous release to go back to"
    ;;
  rollback)
    TARGET=${3:-}; TIMEOUT=${4:-180}
    current=$(cat current 2>/dev/null || true)
    if [ -z "$TARGET" ]; then
      TARGET=$(releases | grep -vx "$current" | tail -1 || true)
      [ -n "$TARGET" ] || die "no earlier release to roll back to (releases: $(releases | tr '\n' ' '))"
    fi
    [ -f "releases/$TARGET.yml" ] || die "no release $TARGET (releases: $(releases | tr '\n' ' '))"
    cp "releases/$TARGET.yml" docker-compose.yml
    up "$TIMEOUT" || { report; die "release $TARGET did not become healthy"; }
    cat docker-compose.yml .env | sha256sum | cut -c1-64 > .applied
    echo "$TARGET" > current
    touch "releases/$TARGET.yml"
    log "rolled back from ${current:-none} to $TARGET"
    ;;
  list)
    current=$(cat current 2>/dev/null || true)
    for r in $(releases); do if [ "$r" = "$current" ]; then echo "$r (current)"; else echo "$r"; fi; done
    ;;
  *) die "unknown command $cmd: use up, rollback or list" ;;
esac
