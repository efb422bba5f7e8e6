#!/usr/bin/env bash
# vpskit health check for one app, run on the server as root (tasks/health.py, cron or monitoring).
#
#   health-check.sh APP_DIR BACKUP_DIR [ADDRESS:]APP_PORT [MAX_BACKUP_AGE_HOURS [MAX_OFFSITE_AGE_SECONDS]]
#
# APP_PORT is the port the app is published on, on ADDRESS (publish_host: 127.0.0.1 when not given, or when it
# is published on every address); 0 when it is not published (publish_port = 0, reached through a proxy
# network): the routes are then asked from inside the app container.
# One line per check, "ok   <check>: <detail>", "warn <check>: <detail>" (something happened since the last
# scheduled check: an OOM kill, a restart, swap written; a service started again) or "FAIL <check>: <detail>";
# exits 1 naming what failed. It changes nothing unless the health timer asks (files/notify.sh sets these):
#   VPSKIT_HEALTH_RECORD=FILE  today's counters (OOM kills, swap written, restarts) written to FILE
#   VPSKIT_HEALTH_REPAIR=1     a service found stopped outside vpskit is started again
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
SWAP_WARN_MB=64  # swap: warn when more than this was written to swap since the last scheduled check
PROC=${VPSKIT_PROC:-/proc}  # settable for the unit test
RECORD=${VPSKIT_HEALTH_RECORD:-}
REPAIR=${VPSKIT_HEALTH_REPAIR:-}
HERE=$(cd "$(dirname "$0")" && pwd)
failed=()
started=""  # set when this check started a service again

report() { # report ok|warn|FAIL check detail
  printf '%-4s %s: %s\n' "$1" "$2" "$3"
  [ "$1" != FAIL ] || failed+=("$2")
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
. "$HERE/common.sh"  # stack_states: the one definition of healthy (the server program's)
STATE=${VPSKIT_STATE:-/var/lib/vpskit/$(basename "$APP_DIR")}
LAST="$STATE/pressure"  # the counters at the last scheduled check (notify.sh keeps them once it alerted)

# A service found stopped by the health timer, though nobody stopped it with vpskit (tasks/stop.py leaves
# .vpskit-stopped; a release, restore or stop holds the app's lock): started again, and said so.
start_again() { # start_again SERVICE|proxy: 0 when it runs now
  [ -n "$REPAIR" ] || return 1
  if [ "$1" = proxy ]; then
    { flock -n 6 && docker start vpskit-proxy >/dev/null 2>&1; } 6>>/opt/vpskit-proxy/.lock || return 1
    [ "$(docker inspect -f '{{.State.Status}}' vpskit-proxy 2>/dev/null)" = running ]
  else
    [ ! -e .vpskit-stopped ] || return 1
    { flock -n 8 && docker compose start "$1" >/dev/null 2>&1; } 8>>.vpskit.lock || return 1
    [ "$(docker compose ps -a --format '{{.State}}' "$1" 2>/dev/null | head -1)" = running ]
  fi
}

# What this server runs: the app and the database (one server), the app (an app server), the database (a db server).
services=$(docker compose config --services 2>/dev/null)
has() { grep -qx "$1" <<< "$services"; }
# The client of an external database (DATABASE_URL), on the server that backs it up: a service only run on demand.
backs_up_external() { docker compose --profile tools config --services 2>/dev/null | grep -qx dbclient; }

states=$(stack_states)
[ -n "$states" ] || report FAIL stack "no services (is docker-compose.yml valid? run deploy.py)"
while read -r service state verdict; do
  [ -n "$service" ] || continue
  case "$state" in
    missing/*) report FAIL "$service" "no container (stack not up?)" ;;
    exited/*|created/*) if start_again "$service"; then started=1; report warn "$service" "was ${state%%/*} (stopped outside vpskit): started again"
       else report FAIL "$service" "container ${state/\// }"; fi ;;
    *) if [ "$verdict" = ok ]; then report ok "$service" "${state/\// }"
       else report FAIL "$service" "container ${state/\// }"; fi ;;
  esac
done <<< "$states"

# The server's proxy (shared by every app vpskit deployed here) serves the published ports and domains.
if [ -f /opt/vpskit-proxy/docker-compose.yml ]; then
  st=$(docker inspect -f '{{.State.Status}}' vpskit-proxy 2>/dev/null || echo missing)
  if [ "$st" = running ]; then report ok proxy "running"
  elif [ "$st" != missing ] && start_again proxy; then started=1; report warn proxy "was $st (stopped outside vpskit): started again"
  else report FAIL proxy "container $st: run deploy.py"; fi
fi

if has app; then
  for path in /api/health /api/health/ready; do
    answer=$(http_get "$path")
    # A service just started again gets a few seconds to answer (bounded: 15 tries, a second apart).
    for _ in $([ -n "$started" ] && seq 15); do
      [ "${answer%% *}" != 200 ] || break
      sleep 1
      answer=$(http_get "$path")
    done
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

read -r mem_total mem_avail < <(awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print t, a}' "$PROC/meminfo")
if [ $((mem_avail * 100 / mem_total)) -ge 5 ]; then
  report ok memory "$((mem_avail / 1024)) MB available of $((mem_total / 1024)) MB"
else
  report FAIL memory "only $((mem_avail / 1024)) MB available of $((mem_total / 1024)) MB"
fi

# Memory pressure since the last scheduled check: OOM kills (the kernel's count), swap written, and the containers
# Docker restarted (a process killed for memory is restarted by its policy). Warnings: they serve again.
vmstat() { awk -v k="$1" '$1 == k {print $2}' "$PROC/vmstat"; }
last() { awk -v k="$1" '$1 == k {v = $2} END {print v + 0}' "$LAST" 2>/dev/null || echo 0; }
# shellcheck disable=SC2046 # one argument per container id
containers=$(docker inspect -f '{{.Id}} {{.RestartCount}} {{.Name}}' $(docker compose ps -a -q 2>/dev/null) \
  $(docker ps -a -q -f name='^vpskit-proxy$') 2>/dev/null)
oom=$(vmstat oom_kill) swapped=$(vmstat pswpout)
if [ -r "$LAST" ]; then
  since="since the last check at $(date -u -r "$LAST" +%H:%M) UTC"
  kills=$(( ${oom:-0} - $(last oom_kill) ))
  if [ "$kills" -gt 0 ]; then report warn oom "$kills OOM kill(s) $since: a process passed a memory limit (journalctl -k | grep -i 'out of memory')"
  else report ok oom "none $since"; fi
  while read -r id count name; do
    [ -n "$id" ] || continue
    n=$(( count - $(last "$id") ))
    [ "$n" -le 0 ] || report warn "${name#/}" "Docker restarted it $n time(s) $since"
  done <<< "$containers"
  written=$(( (${swapped:-0} - $(last pswpout)) * $(getconf PAGESIZE) / 1048576 ))
else
  since="since the server started" written=0
  report ok oom "${oom:-0} OOM kill(s) $since (counted from the next scheduled check)"
fi
read -r swap_total swap_free < <(awk '/^SwapTotal/ {t=$2} /^SwapFree/ {f=$2} END {print t, f}' "$PROC/meminfo")
swap="$(( (swap_total - swap_free) / 1024 )) MB in use of $((swap_total / 1024)) MB"
if [ "$written" -gt "$SWAP_WARN_MB" ]; then report warn swap "$written MB written to swap $since ($swap): the server is short of memory"
else report ok swap "$swap"; fi
[ -z "$RECORD" ] || printf 'oom_kill %s\npswpout %s\n%s\n' "${oom:-0}" "${swapped:-0}" "$containers" > "$RECORD"

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
