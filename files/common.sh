#!/usr/bin/env bash
# What vpskit's server scripts share, sourced by restore.sh, backup.sh, drill.sh, offsite.sh and health-check.sh
# (releases are the server program's: vpskit/server, beside these scripts as vpskit-server).

VPSKIT_SERVER="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/vpskit-server"

# Health: a healthy stack (used in the app's folder). vpskit/server/health.py states the same rule for the
# server program and the deploy; a unit test keeps the two in step until these scripts move there too. A
# service is healthy when its container is running and, if it has a healthcheck, reports "healthy". A stack
# is healthy when it has at least one service and every service is healthy.

service_state() { # service_state SERVICE -> STATUS/HEALTH, e.g. running/healthy, exited/none; or missing
  local id
  id=$(docker compose ps -a -q "$1" 2>/dev/null | head -1)
  if [ -z "$id" ]; then echo missing; return; fi
  docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id" \
    2>/dev/null || echo missing
}

is_healthy() { # is_healthy STATUS/HEALTH
  case "$1" in running/healthy|running/none) return 0 ;; *) return 1 ;; esac
}

stack_states() { # prints "SERVICE STATUS/HEALTH" per service; returns 0 only when the stack is healthy
  local services s st ok=0
  services=$(docker compose config --services 2>/dev/null) || return 1
  [ -n "$services" ] || return 1
  for s in $services; do
    st=$(service_state "$s")
    echo "$s $st"
    is_healthy "$st" || ok=1
  done
  return "$ok"
}

# A database error the app logs on every attempt: the wait ends on the third rather than at the timeout.
DB_ERRORS='ECONNREFUSED|ENOTFOUND|EAI_AGAIN|password authentication failed|cannot connect to Postgres'

container_failure() { # container_failure ID SINCE RESTARTS_BEFORE: sets FAILURE to why the container is
  # not going to get ready (exited, crashed since, or kept failing to reach its database since SINCE)
  local st rc code errors
  FAILURE=""
  read -r st rc code < <(docker inspect -f '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}' "$1" \
    2>/dev/null) || return 1
  if [ "$st" = exited ] || [ "$st" = dead ]; then
    FAILURE="exited with code $code"
  elif [ "$rc" -gt "$3" ]; then
    # Running again by now, so its exit code reads 0: the restart count is what is known.
    FAILURE="crashed and was restarted ($((rc - $3)) since the wait began)"
  elif errors=$(docker logs --since "$2" "$1" 2>&1 | grep -v '^vpskit:' | grep -cE "$DB_ERRORS") \
    && [ "$errors" -ge 3 ]; then
    FAILURE="cannot reach its database ($errors errors logged)"
  fi
  [ -n "$FAILURE" ]
}

restarts() { docker inspect -f '{{.RestartCount}}' "$1" 2>/dev/null || echo 0; }

failed_service() { # failed_service SINCE BASELINE: sets FAILURE to "CONTAINER_ID service why" for the first
  # service whose container failed since the wait began; BASELINE (the name of an associative array, kept
  # by the caller) holds each container's restart count when first seen.
  local -n counts=$2
  local s id
  FAILURE=""
  for s in $(docker compose config --services 2>/dev/null); do
    id=$(docker compose ps -a -q "$s" 2>/dev/null | head -1)
    [ -n "$id" ] || continue
    [ -n "${counts["$id"]:-}" ] || counts["$id"]=$(restarts "$id")
    if container_failure "$id" "$1" "${counts["$id"]}"; then FAILURE="$id $s $FAILURE"; return 0; fi
  done
  return 1
}

wait_healthy() { # wait_healthy SECONDS LABEL: until the stack is healthy; progress every 10s on stderr. Ends
  # early, with the container's last log lines, when a service exits, crashes or cannot reach its database.
  local limit=$1 label=$2 start=$SECONDS shown=$SECONDS states since
  # shellcheck disable=SC2034 # passed by name to failed_service
  local -A baseline=()
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  while :; do
    if states=$(stack_states); then
      echo "vpskit $label: healthy after $((SECONDS - start))s: $(echo "$states" | tr '\n' ' ')" >&2
      return 0
    fi
    if failed_service "$since" baseline; then
      echo "vpskit $label: ${FAILURE#* } after $((SECONDS - start))s; its last log lines:" >&2
      docker logs --tail 25 "${FAILURE%% *}" 2>&1 | sed 's/^/    | /' >&2
      return 1
    fi
    states=$(echo "${states:-no services}" | tr '\n' ' ')
    if (( SECONDS - start >= limit )); then
      echo "vpskit $label: not healthy after ${limit}s: $states" >&2
      return 1
    fi
    if (( SECONDS - shown >= 10 )); then
      echo "vpskit $label: waiting for health, $((SECONDS - start))s of ${limit}s: $states" >&2
      shown=$SECONDS
    fi
    sleep 2
  done
}

# Backups: the complete backups in a folder, oldest first. Their names are UTC timestamps, so name order is
# time order; a folder still being written ends in .partial and does not match.
backup_names() { # backup_names BACKUP_ROOT
  local d
  for d in "$1"/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z; do
    if [ -d "$d" ]; then echo "${d##*/}"; fi
  done
}

# Retention, one rule for the backups here (backup.sh) and the offsite copies (offsite.sh), in the server program
# (vpskit/server/backups.py): of the backup names on stdin, those kept, newest first.
gfs_keep() { "$VPSKIT_SERVER" backups keep "$@"; }  # gfs_keep NOW DAILY WEEKLY MONTHLY < names

human_size() { # human_size BYTES: "12 kB" below a MB, else "3.4 MB"
  awk -v b="$1" 'BEGIN {if (b < 1048576) printf "%d kB", (b + 1023) / 1024; else printf "%.1f MB", b / 1048576}'
}

# The app's root-only configuration, written by deploy.py (vpskit/offsite.py), and one value from it.
offsite_conf() { echo "/etc/vpskit/$(basename "$1")/offsite.env"; }  # offsite_conf APP_DIR
offsite_value() { # offsite_value APP_DIR NAME: the value, or nothing
  { sed -n "s/^export $2=//p" "$(offsite_conf "$1")" 2>/dev/null || true; } | tr -d "'"
}

# The offsite repository set for the app in APP_DIR (backup_offsite), or nothing.
offsite_repository() { offsite_value "$1" RESTIC_REPOSITORY; }  # offsite_repository APP_DIR

# The bucket the app's media live in (media_bucket), as an rclone remote (vpskitmedia:BUCKET), or nothing:
# the media are then in the app's Docker volume.
media_remote() { offsite_value "$1" VPSKIT_MEDIA_REMOTE; }  # media_remote APP_DIR

# rclone with the remote's settings and keys from that file, in a subshell: they reach no other command.
media_rclone() { # media_rclone APP_DIR RCLONE_ARGS...
  local conf
  conf=$(offsite_conf "$1")
  shift
  # shellcheck source=/dev/null
  (. "$conf" && rclone --config /dev/null --retries 3 --low-level-retries 5 --contimeout 15s "$@")
}

# The app's database, for psql, pg_dump and pg_restore (in the app's folder): its own db service, or an external
# one (DATABASE_URL in .env: then .env holds libpq's PGHOST and the rest) through a one-off client container.
db_external() { grep -q '^PGHOST=' .env 2>/dev/null; }
db_sh() { # db_sh SCRIPT [ARGS...]: SCRIPT run by sh with PGUSER and PGDATABASE naming the app's database;
  # stdin and stdout pass through. No secret is on a command line: libpq reads them from the environment.
  if db_external; then
    docker compose run --rm -T --no-deps dbclient sh -c "$1" db_sh "${@:2}"
  else
    # shellcheck disable=SC2016 # expanded inside the db container, where the variables are set
    docker compose exec -T db sh -c 'export PGUSER="$POSTGRES_USER" PGDATABASE="$POSTGRES_DB"; '"$1" db_sh "${@:2}"
  fi
}
# Where the database is, for what the scripts say: "the db service" or the external server's address.
db_where() { if db_external; then echo "the external database $(sed -n 's/^PGHOST=//p' .env | tr -d '"'):$(sed -n 's/^PGPORT=//p' .env | tr -d '"')"; else echo "the db service"; fi; }
db_image() { docker compose config --images "$(if db_external; then echo dbclient; else echo db; fi)" | head -1; }

# The backups' lock: one backup, restore or drill of an app at a time. Waited for, like the app's lock: a deploy's
# backup behind the nightly one waits for it rather than failing (bounded by SECONDS, saying so every 10 s).
take_backups_lock() { # take_backups_lock BACKUP_ROOT SECONDS: fd 9; 1 when another still holds it after SECONDS
  local limit=$2 start=$SECONDS step
  exec 9>"$1/.lock"
  while ! flock -n 9; do
    (( SECONDS - start < limit )) || return 1
    echo "vpskit: waiting for another backup or restore of this app to end (lock $1/.lock, $((SECONDS - start))s of ${limit}s)" >&2
    step=$(( limit - (SECONDS - start) < 10 ? limit - (SECONDS - start) : 10 ))
    flock -w "$(( step > 0 ? step : 1 ))" 9 && break
  done
}

# The app's lock: one release, rollback, restore or stop of an app at a time (in the app's folder; the server
# program takes the same flock: vpskit/server/locks.py).
# shellcheck disable=SC2034
take_lock() { # take_lock SECONDS WHAT: waits up to SECONDS, saying who holds it; sets LOCK_REFUSAL on refusal
  local limit=$1 start=$SECONDS holder step
  exec 8>>.vpskit.lock  # fd 8: restore.sh holds the backups' lock on fd 9
  while ! flock -n 8; do
    holder=$(cat .vpskit.lock.holder 2>/dev/null || echo "unknown")
    if (( SECONDS - start >= limit )); then
      LOCK_REFUSAL="another operation on this app still holds its lock after ${limit}s ($holder): nothing was changed; run this again when it has finished"
      return 1
    fi
    echo "vpskit: waiting for the app's lock, held by $holder ($((SECONDS - start))s of ${limit}s)" >&2
    step=$(( limit - (SECONDS - start) < 10 ? limit - (SECONDS - start) : 10 ))
    flock -w "$(( step > 0 ? step : 1 ))" 8 && break
  done
  echo "$2, since $(date -u +%Y-%m-%dT%H:%M:%SZ)" > .vpskit.lock.holder
}
