#!/usr/bin/env bash
# vpskit releases for one app, run on the server as root by deploy.py and tasks/rollback.py.
#
#   release.sh start APP_DIR ID VERSION TIMEOUT KEEP DRAIN LOCK_WAIT HASH WHO [MIGRATIONS]
#       release the files the deploy pushed to APP_DIR/next (HASH: their sha256, so a push by another
#       deploy in between is seen); with MIGRATIONS (pending Payload migrations, comma-separated), run the
#       one-shot migrate service first and check that each of them is recorded afterwards
#   release.sh rollback APP_DIR TARGET TIMEOUT KEEP DRAIN LOCK_WAIT WHO
#       release a recorded release again: its compose file, .env and proxy route (TARGET "": the one before)
#   release.sh follow APP_DIR ID     print a release's log as it grows; exit with its status
#   release.sh list APP_DIR          the release log, then the releases kept for rollback
#   release.sh run APP_DIR ID        (internal) the release itself, in a systemd unit of its own
#
# A release is a transaction owned by the server: `start` snapshots the files, launches `run` detached
# (a transient systemd unit), then follows its log; the SSH session going away stops only the following.
# `run` takes the app's release lock, starts the new app container beside the serving one (never published:
# the proxy owns the ports), waits until it answers ready, switches the proxy to it, drains and stops the
# old one. Any failure before the switch removes only the new container and puts the previous files back.
# Every attempt ends with one line in releases/log.
set -Eeuo pipefail

log() { echo "vpskit release: $*" >&2; }
die() { log "$*"; exit 1; }

HERE=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?usage: release.sh start|rollback|follow|list APP_DIR ...}
APP_DIR=${2:?usage: release.sh start|rollback|follow|list APP_DIR ...}
cd "$APP_DIR" || die "no app at $APP_DIR: deploy first"
mkdir -p releases/attempts

# shellcheck source=files/common.sh
. "$HERE/common.sh"  # locks, container checks, stack health
# shellcheck source=files/proxy.sh
. "$HERE/proxy.sh"   # the bundled proxy's route for this app

launch() { # launch ID: `run` in a transient unit of its own (or a new session where systemd is absent)
  local out="releases/attempts/$1.log"
  if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; then
    systemd-run --quiet --collect --unit "vpskit-release-$(basename "$APP_DIR")-$1" \
      --property StandardOutput=append:"$APP_DIR/$out" --property StandardError=append:"$APP_DIR/$out" \
      "$HERE/release.sh" run "$APP_DIR" "$1"
  else
    setsid "$HERE/release.sh" run "$APP_DIR" "$1" >>"$out" 2>&1 </dev/null &
  fi
}

follow() { # follow ID: the attempt's log as it grows, until its status file appears
  local out="releases/attempts/$1.log" status="releases/attempts/$1.status" shown=0 n code
  while :; do
    if [ -f "$out" ]; then
      n=$(wc -l < "$out")
      if [ "$n" -gt "$shown" ]; then sed -n "$((shown + 1)),${n}p" "$out" >&2; shown=$n; fi
    fi
    if [ -s "$status" ]; then
      [ -f "$out" ] && sed -n "$((shown + 1)),\$p" "$out" >&2
      code=$(cat "$status")
      case "$code" in ''|*[!0-9]*) return 1 ;; *) return "$code" ;; esac
    fi
    sleep 0.5
  done
}

snapshot() { # snapshot ID SRC_COMPOSE SRC_ENV SRC_ROUTE: the attempt's own copy of what it releases
  local dir="releases/attempts/$1"
  mkdir -p "$dir"
  cp "$2" "$dir/docker-compose.yml"
  cp -p "$3" "$dir/.env" && chmod 600 "$dir/.env"
  if [ -f "$4" ]; then cp "$4" "$dir/proxy-route.caddy"; else : > "$dir/proxy-route.caddy"; fi
}

params() { # params NAME=VALUE...: the attempt's parameters, read back by `run`
  local kv
  for kv in "$@"; do printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"; done
}

case "$cmd" in
  start)
    ID=${3:?}; VERSION=${4:?}
    [ -f next/docker-compose.yml ] || die "nothing to release: next/docker-compose.yml is missing (run deploy.py)"
    snapshot "$ID" next/docker-compose.yml next/.env next/proxy-route.caddy
    hash=$(desired_hash "releases/attempts/$ID")
    if [ "$hash" != "${9:?}" ]; then
      rm -rf "releases/attempts/$ID"
      die "the files of version $VERSION were replaced on the server by another deploy before this release began: nothing was changed by this run; the other deploy releases its own version"
    fi
    params VERSION="$VERSION" TIMEOUT="${5:?}" KEEP="${6:?}" DRAIN="${7:?}" LOCK_WAIT="${8:?}" \
      HASH="$hash" WHO="${10:?}" MIGRATE="${11:-}" KIND=release > "releases/attempts/$ID/params"
    launch "$ID"
    follow "$ID"
    ;;
  rollback)
    TARGET=${3:-}; current=$(cat current 2>/dev/null || true)
    if [ -z "$TARGET" ]; then
      TARGET=$(releases | grep -vx "$current" | tail -1 || true)
      [ -n "$TARGET" ] || die "no earlier release to roll back to (releases: $(releases | tr '\n' ' '))"
    fi
    [ -f "releases/$TARGET.yml" ] || die "no release $TARGET (releases: $(releases | tr '\n' ' '))"
    # Releases recorded before vpskit kept their .env go back with today's.
    env="releases/$TARGET.env"; [ -f "$env" ] || env=.env
    ID="$(date -u +%Y%m%dT%H%M%SZ)-rollback-$$"
    snapshot "$ID" "releases/$TARGET.yml" "$env" "releases/$TARGET.caddy"
    hash=$(desired_hash "releases/attempts/$ID")
    params VERSION="$TARGET" TIMEOUT="${4:?}" KEEP="${5:?}" DRAIN="${6:?}" LOCK_WAIT="${7:?}" HASH="$hash" \
      WHO="${8:?}" MIGRATE="" KIND=rollback FROM="$current" > "releases/attempts/$ID/params"
    launch "$ID"
    follow "$ID"
    ;;
  follow) follow "${3:?}" ;;
  run) exec "$HERE/release-run.sh" "$APP_DIR" "${3:?}" ;;
  list)
    if [ -s releases/log ]; then
      echo "release log (time, version, configuration, who, result, seconds, reason):"
      tail -n 20 releases/log | sed 's/^/  /'
    fi
    current=$(cat current 2>/dev/null || true)
    echo "kept for rollback, oldest first:"
    for r in $(releases); do if [ "$r" = "$current" ]; then echo "  $r (current)"; else echo "  $r"; fi; done
    ;;
  *) die "unknown command $cmd: use start, rollback, follow or list" ;;
esac
