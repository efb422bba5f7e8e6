#!/usr/bin/env bash
# vpskit releases for one app, run on the server as root by deploy.py and tasks/rollback.py.
#
#   release.sh start APP_DIR ID VERSION TIMEOUT KEEP DRAIN LOCK_WAIT HASH WHO [MIGRATIONS]
#       release the files the deploy pushed to APP_DIR/next (HASH: their sha256, so a push by another
#       deploy in between is seen); with MIGRATIONS (pending Payload migrations, comma-separated), run the
#       one-shot migrate service first and check that each of them is recorded afterwards
#   release.sh rollback APP_DIR N TIMEOUT KEEP DRAIN LOCK_WAIT WHO
#       release kept release N again (tasks/rollback.py chooses it): its compose file, .env and proxy route,
#       with today's secrets (a secret rotated since is not brought back)
#   release.sh follow APP_DIR ID [SECONDS]
#       print a release's log as it grows; exit with its status. A release process that ends without one
#       (stopped, killed) is recorded as failed; after SECONDS the following stops (the release goes on)
#   release.sh list APP_DIR          the release log, then the releases kept for rollback
#   release.sh run APP_DIR ID        (internal) the release itself, in a systemd unit of its own
#
# A release is a transaction owned by the server: `start` snapshots the files, launches `run` detached
# (a transient systemd unit), then follows its log; the SSH session going away stops only the following.
# `run` takes the app's release lock, starts the new app container beside the serving one (never published:
# the proxy owns the ports), waits until it answers ready, switches the proxy to it, drains and stops the
# old one. Any failure before the switch removes only the new container and puts the previous files back.
# Every attempt ends with one line in releases/log. Releases are kept by number (common.sh release_numbers).
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

unit_of() { echo "vpskit-release-$(basename "$APP_DIR")-$1"; }  # unit_of ID: the attempt's systemd unit

launch() { # launch ID: `run` in a transient unit of its own (or a new session where systemd is absent)
  local out="releases/attempts/$1.log"
  if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; then
    systemd-run --quiet --collect --unit "$(unit_of "$1")" \
      --property StandardOutput=append:"$APP_DIR/$out" --property StandardError=append:"$APP_DIR/$out" \
      "$HERE/release.sh" run "$APP_DIR" "$1"
  else
    setsid "$HERE/release.sh" run "$APP_DIR" "$1" >>"$out" 2>&1 </dev/null &
    echo $! > "releases/attempts/$1.pid"
  fi
}

alive() { # alive ID: the attempt's release process still runs (its systemd unit, or its process; when neither
  # can be asked, it counts as running: the deadline of `follow` still bounds the wait)
  if [ -f "releases/attempts/$1.pid" ]; then kill -0 "$(cat "releases/attempts/$1.pid")" 2>/dev/null; return; fi
  [ -d /run/systemd/system ] || return 0
  systemctl is-active --quiet "$(unit_of "$1")"
}

ended_without_status() { # ended_without_status ID: the attempt recorded as failed: its process ended without
  # writing a result (stopped, killed, out of memory), so nothing says what it finished
  local why="release attempt $1 ended without a result (its process was stopped or killed; its log is above): recorded as failed; run the deploy again: it removes what the attempt left and releases again"
  log "$why"
  (
    # shellcheck source=/dev/null
    . "releases/attempts/$1/params" 2>/dev/null || true
    # shellcheck disable=SC2153 # VERSION, HASH, WHO, KIND: the attempt's parameters, when it left them
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${VERSION:-?}" "${HASH:0:12}" \
      "${WHO:-?}" "${KIND:-release}:failed" "-" "$why" >> releases/log
  )
  echo 1 > "releases/attempts/$1.status.new" && mv "releases/attempts/$1.status.new" "releases/attempts/$1.status"
}

follow() { # follow ID [SECONDS]: the attempt's log as it grows, until its status file appears (or its process
  # ends without one: recorded as failed); after SECONDS, stops following (the release goes on on the server)
  local out="releases/attempts/$1.log" status="releases/attempts/$1.status" shown=0 n code start=$SECONDS polls=0
  local limit=${2:-86400}
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
    polls=$((polls + 1))
    # Every 2 s: the process gone without a status (it writes the status before it ends: read it once more).
    if (( polls % 4 == 0 )) && ! alive "$1"; then
      sleep 1
      [ -s "$status" ] && continue
      [ -f "$out" ] && sed -n "$((shown + 1)),\$p" "$out" >&2
      ended_without_status "$1"
      return 1
    fi
    if (( SECONDS - start >= limit )); then
      log "attempt $1 is still running on the server after ${limit}s: stopped following it (its log: $APP_DIR/$out)"
      return 1
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

# How long the deploy follows a release: the lock wait, the database, migrations and readiness (each bounded by
# TIMEOUT or far below), the drain, and a margin; past it the release goes on, unfollowed.
follow_limit() { echo $(( $1 + 4 * $2 + $3 + 1800 )); }  # follow_limit LOCK_WAIT TIMEOUT DRAIN

case "$cmd" in
  start)
    ID=${3:?}; VERSION=${4:?}
    upgrade_releases
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
    follow "$ID" "$(follow_limit "$8" "$5" "$7")"
    ;;
  rollback)
    TARGET=${3:?}; current=$(cat current 2>/dev/null || true)
    upgrade_releases
    kept=$(release_numbers | paste -sd' ')
    { [[ $TARGET =~ ^[0-9]+$ ]] && [ -f "releases/$TARGET.yml" ]; } \
      || die "no release $TARGET kept here (kept: ${kept:-none}): list them with tasks/rollback.py --data list=true"
    ID="$(date -u +%Y%m%dT%H%M%SZ)-rollback-$$"
    # Its files, with today's secrets (releases recorded before vpskit kept their .env go back with today's).
    env=$(mktemp); trap 'rm -f "$env"' EXIT
    if [ -f "releases/$TARGET.env" ]; then with_current_secrets "releases/$TARGET.env" .env > "$env"; else cp .env "$env"; fi
    snapshot "$ID" "releases/$TARGET.yml" "$env" "releases/$TARGET.caddy"
    hash=$(desired_hash "releases/attempts/$ID")
    params VERSION="$(release_version "$TARGET")" RELEASE="$TARGET" TIMEOUT="${4:?}" KEEP="${5:?}" DRAIN="${6:?}" \
      LOCK_WAIT="${7:?}" HASH="$hash" WHO="${8:?}" MIGRATE="" KIND=rollback \
      FROM="$(release_version "$current")" > "releases/attempts/$ID/params"
    launch "$ID"
    follow "$ID" "$(follow_limit "$7" "$4" "$6")"
    ;;
  follow) follow "${3:?}" "${4:-}" ;;
  run) upgrade_releases; exec "$HERE/release-run.sh" "$APP_DIR" "${3:?}" ;;
  list)  # reads only: a layout of an older vpskit is listed as it is
    if [ -s releases/log ]; then
      echo "release log (time, version, configuration, who, result, seconds, reason):"
      tail -n 20 releases/log | sed 's/^/  /'
    fi
    current=$(cat current 2>/dev/null || true)
    echo "kept for rollback, oldest first (release, version, configuration, released):"
    if [ -f releases/index ]; then
      while IFS=$'\t' read -r n v c _ at; do
        echo "  $n  $v$([ "$n" = "$current" ] && echo " (current)")  config $c  $at"
      done < releases/index
    else
      # shellcheck disable=SC2012 # by time, oldest first; names are Docker tags
      for r in $(ls -1tr releases 2>/dev/null | sed -n 's/\.yml$//p'); do
        echo "  $r$([ "$r" = "$current" ] && echo " (current)")"
      done
    fi
    ;;
  *) die "unknown command $cmd: use start, rollback, follow or list" ;;
esac
