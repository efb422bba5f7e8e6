#!/usr/bin/env bash
# vpskit health check for one app, run on the server as root (tasks/health.py, cron or monitoring).
#
#   health-check.sh APP_DIR BACKUP_DIR [ADDRESS:]APP_PORT [MAX_BACKUP_AGE_HOURS [MAX_OFFSITE_AGE_SECONDS]]
#
# APP_PORT is the port the app is published on, on ADDRESS (publish_host: 127.0.0.1 when not given, or when it
# is published on every address); 0 when it is not published (publish_port = 0, reached through a proxy
# network): the routes are then asked from inside the app container.
# One line per check, "ok   <check>: <detail>" or "FAIL <check>: <detail>"; exits 1 naming what failed.
set -uo pipefail

APP_DIR=${1:?usage: health-check.sh APP_DIR BACKUP_DIR APP_PORT [MAX_BACKUP_AGE_HOURS]}
BACKUP_DIR=${2:?}
PORT=${3:?}
ADDRESS=127.0.0.1
if [[ $PORT == *:* ]]; then ADDRESS=${PORT%:*} PORT=${PORT##*:}; fi
MAX_AGE_H=${4:-26}
MAX_OFFSITE_S=${5:-172800}
MIN_FREE_MB=1024  # disk: FAIL below 1 GiB free or below 10 % of the disk (docs/DOCKER-DEPLOYMENT.md says so)
MIN_FREE_PCT=10
HERE=$(cd "$(dirname "$0")" && pwd)
failed=()

report() { # report ok|FAIL check detail
  printf '%-4s %s: %s\n' "$1" "$2" "$3"
  [ "$1" = ok ] || failed+=("$2")
}

http_get() { # http_get PATH -> "STATUS BODY" of GET ADDRESS:PORT/PATH (status 000 when nothing answers)
  local out
  if [ "$PORT" = 0 ]; then
    # shellcheck disable=SC2016 # expanded by node inside the container
    out=$(timeout 10 docker compose exec -T app node -e 'fetch("http://127.0.0.1:" + process.env.PORT + process.argv[1]).then(async r => console.log(r.status + " " + (await r.text())), () => console.log("000"))' "$1" 2>/dev/null)
  else
    out=$(timeout 10 bash -c "exec 3<>/dev/tcp/$ADDRESS/$PORT && printf 'GET $1 HTTP/1.0\r\nHost: $ADDRESS\r\n\r\n' >&3 && cat <&3" 2>/dev/null | tr -d '\r' | awk 'NR == 1 {printf "%s ", $2; next} body {print} /^$/ {body = 1}')
  fi
  echo "${out:-000}"
}

reason_of() { # reason_of BODY -> the "reason" field of a JSON answer, if any
  sed -n 's/.*"reason":"\([^"]*\)".*/\1/p' <<< "$1"
}

cd "$APP_DIR" 2>/dev/null || { echo "FAIL app: nothing deployed at $APP_DIR"; exit 1; }
# shellcheck source=files/common.sh
. "$HERE/common.sh"  # the one definition of healthy

# What this server runs: the app and the database (one server), the app (an app server), the database (a db server).
services=$(docker compose config --services 2>/dev/null)
has() { grep -qx "$1" <<< "$services"; }
# The client of an external database (DATABASE_URL), on the server that backs it up: a service only run on demand.
backs_up_external() { docker compose --profile tools config --services 2>/dev/null | grep -qx dbclient; }

states=$(stack_states)
[ -n "$states" ] || report FAIL stack "no services (is docker-compose.yml valid? run deploy.py)"
while read -r service state; do
  [ -n "$service" ] || continue
  case "$state" in
    missing) report FAIL "$service" "no container (stack not up?)" ;;
    *) if is_healthy "$state"; then report ok "$service" "${state/\// }"
       else report FAIL "$service" "container ${state/\// }"; fi ;;
  esac
done <<< "$states"

# The server's proxy (shared by every app vpskit deployed here) serves the published ports and domains.
if [ -f /opt/vpskit-proxy/docker-compose.yml ]; then
  st=$(docker inspect -f '{{.State.Status}}' vpskit-proxy 2>/dev/null || echo missing)
  if [ "$st" = running ]; then report ok proxy "running"; else report FAIL proxy "container $st: run deploy.py"; fi
fi

if has app; then
  for path in /api/health /api/health/ready; do
    answer=$(http_get "$path")
    code=${answer%% *}
    why=$(reason_of "$answer")
    if [ "$code" = 200 ]; then report ok "$path" "200"; else report FAIL "$path" "HTTP $code${why:+: $why}"; fi
  done
fi

read -r avail_kb pct < <(df -Pk /var/lib/docker 2>/dev/null | awk 'NR==2 {print $4, 100 - $5}')
if [ "${avail_kb:-0}" -ge $((MIN_FREE_MB * 1024)) ] && [ "${pct:-0}" -ge "$MIN_FREE_PCT" ]; then
  report ok disk "$((avail_kb / 1024)) MB free (${pct}%)"
else
  report FAIL disk "only $((avail_kb / 1024)) MB free (${pct}%, below ${MIN_FREE_MB} MB or ${MIN_FREE_PCT}%): prune images or grow the disk"
fi

read -r mem_total mem_avail < <(awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print t, a}' /proc/meminfo)
if [ $((mem_avail * 100 / mem_total)) -ge 5 ]; then
  report ok memory "$((mem_avail / 1024)) MB available of $((mem_total / 1024)) MB"
else
  report FAIL memory "only $((mem_avail / 1024)) MB available of $((mem_total / 1024)) MB"
fi

# An external database (DATABASE_URL) is no service here: asked directly, from the server that backs it up.
if backs_up_external; then
  if [ "$(db_sh 'psql -XAtc "select 1"' 2>/dev/null)" = 1 ]; then report ok database "$(db_where) answers"
  else report FAIL database "$(db_where) does not answer from this server"; fi
fi

# Backups are taken where the database is (or, for an external one, where the app is).
if has db || backs_up_external; then
  last=$(backup_names "$BACKUP_DIR" | tail -1)
  if [ -z "$last" ]; then
    report FAIL backup "no backup in $BACKUP_DIR yet: run tasks/backup.py"
  else
    age_h=$(( ($(date -u +%s) - $(date -u -d "${last:0:4}-${last:4:2}-${last:6:2} ${last:9:2}:${last:11:2}:${last:13:2}" +%s)) / 3600 ))
    if [ "$age_h" -le "$MAX_AGE_H" ]; then report ok backup "last $last (${age_h}h ago)"
    else report FAIL backup "last $last is ${age_h}h old (limit ${MAX_AGE_H}h)"; fi
  fi
fi

# The last confirmed offsite copy (files/offsite.sh writes it), when backup_offsite is set.
if { has db || backs_up_external; } && [ -n "$(offsite_repository "$APP_DIR")" ]; then
  if read -r name snapshot at < "$BACKUP_DIR/.offsite-last" 2>/dev/null; then
    age=$(( $(date -u +%s) - at ))
    took="$((age / 3600))h $((age % 3600 / 60))m"
    if [ "$age" -le "$MAX_OFFSITE_S" ]; then report ok offsite "last copy $name, snapshot ${snapshot:0:8} ($took ago)"
    else report FAIL offsite "last copy $name is $took old (limit ${MAX_OFFSITE_S}s, offsite_max_age): run tasks/backup.py and read its error"; fi
  else
    report FAIL offsite "no offsite copy yet: run tasks/backup.py"
  fi
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "unhealthy: ${failed[*]}"
  exit 1
fi
echo "healthy"
