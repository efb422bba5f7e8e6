#!/usr/bin/env bash
# vpskit alerts, run on the server as root: by the backup, drill and health timers' units, and by releases.
#
#   notify.sh run EVENT -- COMMAND...   # runs COMMAND (output kept for the journal); when it fails, one
#                                       # message with its last line, and COMMAND's exit status
#   notify.sh release OK|FAILED TEXT    # one message per release when notify_releases is set
#
# The webhook URL (NOTIFY_URL in the operator's .env) is read from the root-only /etc/vpskit/<app>/offsite.env
# and handed to curl in a config on a file descriptor: never on a command line. The body is JSON with the
# text under "text" (Slack, Mattermost, ntfy's JSON) and "content" (Discord), plus app, host, event and ok.
# The scheduled health check alerts once when it starts failing (and once when it recovers), not every run.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
APP=$(basename "$(dirname "$HERE")")
CONF=${VPSKIT_OFFSITE_CONF:-/etc/vpskit/$APP/offsite.env}  # settable for the unit test
STATE=${VPSKIT_STATE:-/var/lib/vpskit/$APP}
NOTIFY_URL="" VPSKIT_NOTIFY_RELEASES=""
# shellcheck source=/dev/null
[ -r "$CONF" ] && . "$CONF"

json() { # json TEXT: a JSON string (backslashes, quotes, control characters escaped)
  printf '%s' "$1" | tr '\n\t\r' '   ' | sed 's/[[:cntrl:]]//g; s/\\/\\\\/g; s/"/\\"/g; s/^/"/; s/$/"/'
}

send() { # send EVENT OK(true|false) TEXT: 1 when the webhook did not take it
  [ -n "$NOTIFY_URL" ] || return 0
  local text body
  text="vpskit $APP on $(hostname): $3"
  body="{\"text\": $(json "$text"), \"content\": $(json "$text"), \"app\": $(json "$APP"), \"host\": $(json "$(hostname)"), \"event\": $(json "$1"), \"ok\": $2}"
  if ! curl -fsS -m 20 --retry 2 -o /dev/null -H 'Content-Type: application/json' --data-binary "$body" \
      -K <(printf 'url = "%s"\n' "$NOTIFY_URL") 2>&1; then
    echo "vpskit notify: the webhook (NOTIFY_URL) did not take the message: $text" >&2
    return 1
  fi
}

case ${1:-} in
  run)
    event=${2:?EVENT}
    shift 3  # run EVENT --
    out=$(mktemp)
    if [ "$event" = health ]; then
      # The scheduled check records its counters (OOM kills, swap, restarts) and starts a service found stopped.
      mkdir -p "$STATE"
      export VPSKIT_HEALTH_RECORD="$STATE/pressure.new" VPSKIT_HEALTH_REPAIR=1
    fi
    "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    # The cause: a health check's failed checks, else the command's last line (vpskit's scripts end on it).
    cause=$(sed -n 's/^FAIL *//p' "$out" | paste -sd ';' | sed 's/;/; /g')
    [ -n "$cause" ] || cause=$(grep -v '^ *$' "$out" | tail -1)
    warned=$(sed -n 's/^warn *//p' "$out" | paste -sd ';' | sed 's/;/; /g')
    rm -f "$out"
    if [ "$event" = health ]; then
      # What happened since the last check (an OOM kill, a restart, a service started again): one message each
      # time; its counters become the next check's only once the message went out.
      sent=0
      if [ -n "$warned" ]; then send health false "health check: $warned" || sent=1; fi
      if [ "$sent" = 0 ]; then mv -f "$STATE/pressure.new" "$STATE/pressure" 2>/dev/null; fi
      # Once per change of state: failing (what failed), then recovered; nothing while all stays well. The new
      # state is kept only once the message went out: a webhook down at that moment hears of it on the next run.
      before=$(cat "$STATE/health" 2>/dev/null || echo ok)
      now=ok; [ "$rc" = 0 ] || now=failing  # not the cause: a check that fails differently is one failure
      if [ "$now" != "$before" ]; then
        if [ "$rc" = 0 ]; then sent=0; send health true "health check passes again" || sent=1
        else sent=0; send health false "health check failed: $cause" || sent=1; fi
        if [ "$sent" = 0 ]; then echo "$now" > "$STATE/health"; fi
      fi
    elif [ "$rc" != 0 ]; then
      send "$event" false "$event failed: $cause"
    fi
    exit "$rc" ;;
  release)
    [ "$VPSKIT_NOTIFY_RELEASES" = 1 ] || exit 0
    send release "$([ "$2" = OK ] && echo true || echo false)" "${3:-release}" ;;
  *) echo "usage: notify.sh run EVENT -- COMMAND... | release OK|FAILED TEXT" >&2; exit 2 ;;
esac
