#!/usr/bin/env bash
# What vpskit's server scripts share, sourced by release.sh, restore.sh, backup.sh and health-check.sh.
#
# Health: the one definition of a healthy stack (used in the app's folder). vpskit/health.py states the same
# rule for the deploy's own check; a unit test keeps the two in step. A service is healthy when its
# container is running and, if it has a healthcheck, reports "healthy". A stack is healthy when it has at
# least one service and every service is healthy.

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

failed_service() { # failed_service SINCE BASELINE: sets FAILURE to "CONTAINER_ID why" for the first service
  # that exited, crashed or keeps failing to reach its database since the wait began; BASELINE (the name of
  # an associative array, kept by the caller) holds each container's restart count when first seen.
  local -n restarts=$2
  local s id st rc code errors
  FAILURE=""
  for s in $(docker compose config --services 2>/dev/null); do
    id=$(docker compose ps -a -q "$s" 2>/dev/null | head -1)
    [ -n "$id" ] || continue
    read -r st rc code < <(docker inspect -f '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}' "$id" \
      2>/dev/null) || continue
    [ -n "${restarts["$id"]:-}" ] || restarts["$id"]=$rc
    if [ "$st" = exited ] || [ "$st" = dead ]; then
      FAILURE="$id $s exited with code $code"
    elif [ "$rc" -gt "${restarts["$id"]}" ]; then
      # Running again by now, so its exit code reads 0: the restart count is what is known.
      FAILURE="$id $s crashed and was restarted ($((rc - restarts["$id"])) since the wait began)"
    elif errors=$(docker logs --since "$1" "$id" 2>&1 | grep -v '^vpskit:' | grep -cE "$DB_ERRORS") \
      && [ "$errors" -ge 3 ]; then
      FAILURE="$id $s cannot reach its database ($errors errors logged)"
    fi
    [ -z "$FAILURE" ] || return 0
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
