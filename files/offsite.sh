#!/usr/bin/env bash
# vpskit offsite copies with restic, run on the server as root by vpskit-server (backup, restore, drill).
#
#   offsite.sh copy BACKUP_ROOT NAME     # after a verified local backup: upload, confirm, then remote retention
#   offsite.sh fetch WHICH DEST          # a snapshot (latest, a backup name or a snapshot id) into DEST, verified
#
# Repository, password and keys come from the root-only /etc/vpskit/<app>/offsite.env that deploy.py writes
# (rendered by vpskit/offsite.py): restic reads them from its environment, so they never reach a command
# line, the process list or a log. Every failure ends with one line naming the repository and the cause.
set -Eeuo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# The retention rule and sizes as the server program states them (vpskit/server/backups.py).
gfs_keep() { "$HERE/vpskit-server" backups keep "$@"; }  # gfs_keep NOW DAILY WEEKLY MONTHLY < names
human_size() { "$HERE/vpskit-server" backups size "$1"; }  # human_size BYTES: "12 kB", "3.4 MB"
APP=$(basename "$(dirname "$HERE")")
CONF=${VPSKIT_OFFSITE_CONF:-/etc/vpskit/$APP/offsite.env}
die() { echo "vpskit offsite: $*" >&2; exit 1; }
[ -r "$CONF" ] || die "no offsite configuration ($CONF): set backup_offsite and run deploy.py"
# shellcheck source=/dev/null
. "$CONF"
[ -n "${RESTIC_REPOSITORY:-}" ] || die "backup_offsite is not set: nothing to copy to or fetch from"
command -v restic >/dev/null || die "restic is not installed on this server: run deploy.py (it installs restic when backup_offsite is set)"
# --retry-lock came with restic 0.16 (Ubuntu 24.04 has 0.16, Debian 13 0.18; Debian 12's 0.14 is too old).
version=$(restic version | awk '{print $2}')
[ "$(printf '%s\n' 0.16.0 "$version" | sort -V | head -1)" = 0.16.0 ] \
  || die "restic $version on this server is too old for vpskit's offsite copies: 0.16 or newer is needed (Debian 13, Ubuntu 24.04)"
export TZ=UTC  # snapshot times (and so the retention's days and weeks) in UTC, as the local backups' names

# restic with the options every call shares; sftp goes through the app's own key (a path, not a secret)
RESTIC=(restic --retry-lock 2m)
if [ -n "${VPSKIT_SFTP_COMMAND:-}" ]; then RESTIC+=(-o "sftp.command=$VPSKIT_SFTP_COMMAND"); fi
r() { "${RESTIC[@]}" "$@"; }
# The long calls (upload, prune, download) are bounded: a repository that stops answering must not hold the
# backups' lock (and every deploy's pre-update backup behind it) for ever.
LIMIT=${VPSKIT_OFFSITE_TIMEOUT:-1800}
long() { timeout -k 30 "$LIMIT" "${RESTIC[@]}" "$@"; }

cause() { # the first line of restic's error that says something (without "Fatal: "), else why it kept retrying
  local line
  line=$(grep -v -e '^$' -e 'retrying after' "$1" | head -1 | sed 's/^Fatal: //')
  [ -n "$line" ] || line=$(grep 'retrying after' "$1" | tail -1 | sed 's/.*retrying after [^:]*: //')
  printf '%s' "$line"
}

bounded() { # bounded SECONDS ERRFILE ARGS...: restic ARGS, stderr to ERRFILE; 124 after SECONDS; 10 as soon as
  # an S3 bucket is reported missing (restic keeps retrying that instead of saying "no repository")
  local limit=$1 err=$2 pid waited=0
  shift 2
  "${RESTIC[@]}" "$@" >/dev/null 2>"$err" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if grep -q -e 'bucket does not exist' -e 'NoSuchBucket' "$err"; then kill "$pid"; wait "$pid"; return 10; fi
    if [ "$waited" -ge $((limit * 5)) ]; then kill "$pid"; wait "$pid"; return 124; fi
    sleep 0.2
    waited=$((waited + 1))
  done
  wait "$pid"
}

open_repo() { # open_repo init|noinit CONSEQUENCE: the repository answers with this password (created on first
  # use with init); otherwise one line with the cause, then CONSEQUENCE
  local err rc=0 after=$2
  err=$(mktemp)
  bounded 120 "$err" cat config || rc=$?
  if [ "$rc" = 0 ]; then rm -f "$err"; return; fi
  if [ "$rc" = 10 ] || { [ "$rc" != 124 ] && grep -q 'Is there a repository at the following location' "$err"; }; then
    if [ "$1" = noinit ]; then rm -f "$err"; die "no restic repository at $RESTIC_REPOSITORY yet: nothing to restore from"; fi
    if timeout 120 "${RESTIC[@]}" init >/dev/null 2>"$err"; then
      echo "vpskit offsite: initialized the restic repository $RESTIC_REPOSITORY" >&2; rm -f "$err"; return
    fi
    rc=1
  fi
  local why; why=$(cause "$err")
  # Cut short by the timeout: what restic kept retrying on says more than its goodbye.
  [ "$rc" = 124 ] && why="no answer within 120s$(grep 'retrying after' "$err" | tail -1 | sed 's/.*retrying after [^:]*: /, last error: /')"
  rm -f "$err"
  if [ "$rc" = 12 ] || [[ $why == *"wrong password"* ]]; then
    die "the restic repository $RESTIC_REPOSITORY does not open with RESTIC_PASSWORD from .env (wrong password): $after"
  fi
  die "cannot reach the restic repository $RESTIC_REPOSITORY (${why:-restic exited $rc}): $after"
}

snapshot_field() { # snapshot_field FIELD JSON: the last value of "FIELD":"..." in restic's JSON
  grep -o "\"$1\":\"[^\"]*\"" <<< "$2" | tail -1 | cut -d'"' -f4
}

copy() {
  local root=$1 name=$2 err out id
  local -a keep
  read -r -a keep <<< "${VPSKIT_KEEP:-7 4 6}"
  open_repo init "the local backup $name is kept"
  err=$(mktemp)
  # From inside the backup's folder: the snapshot holds its files at the top, as fetch puts them back.
  local rc=0
  out=$(cd "$root/$name" && long backup --host "$VPSKIT_APP" --tag vpskit --tag "backup=$name" \
    --time "${name:0:4}-${name:4:2}-${name:6:2} ${name:9:2}:${name:11:2}:${name:13:2}" --json --quiet . 2>"$err") || rc=$?
  if [ "$rc" != 0 ]; then
    local why; why=$(cause "$err"); rm -f "$err"
    [ "$rc" != 124 ] || why="it did not finish within ${LIMIT}s"
    die "copying backup $name to $RESTIC_REPOSITORY failed: ${why:-restic backup failed}; the local backup is kept"
  fi
  id=$(snapshot_field snapshot_id "$out")
  # Confirmed: the repository lists the new snapshot before any remote retention may remove anything.
  if [ -z "$id" ] || ! r snapshots --json "$id" 2>"$err" | grep -q "\"id\":\"$id\""; then
    rm -f "$err"
    die "backup $name was sent to $RESTIC_REPOSITORY but the snapshot is not listed there: the local backup is kept; remote retention skipped"
  fi
  # Remote retention by the local rule itself (gfs_keep; restic's own policy keeps extra "oldest"
  # snapshots): the app's snapshots whose backup the rule drops are forgotten, then their data pruned.
  local pairs kept drop
  pairs=$(r snapshots --json --host "$VPSKIT_APP" --tag vpskit 2>"$err" \
    | grep -o -e '"backup=[0-9TZ]*"' -e '"short_id":"[0-9a-f]*"' \
    | sed -e 's/^"backup=\(.*\)"$/\1/' -e 's/^"short_id":"\(.*\)"$/\1/' | paste -d' ' - -) \
    || { echo "vpskit offsite: remote retention skipped (the snapshots could not be listed): the copy itself is safe" >&2; pairs=""; }
  if [ -n "$pairs" ]; then
    kept=$(awk '{print $1}' <<< "$pairs" | gfs_keep "$name" "${keep[0]}" "${keep[1]}" "${keep[2]}")
    drop=$(awk -v kept="$kept" 'BEGIN {n = split(kept, k, "\n"); for (i = 1; i <= n; i++) keep[k[i]] = 1}
      !($1 in keep) {print $2}' <<< "$pairs")
    # shellcheck disable=SC2086 # one snapshot id per word
    if [ -n "$drop" ] && ! long forget --prune --quiet $drop >/dev/null 2>"$err"; then
      echo "vpskit offsite: remote retention failed ($(cause "$err")): the copy itself is safe" >&2
    fi
  fi
  rm -f "$err"
  printf '%s %s %s\n' "$name" "$id" "$(date -u +%s)" > "$root/.offsite-last.new"
  mv "$root/.offsite-last.new" "$root/.offsite-last"
  # What this copy added to the repository, after deduplication and compression, against what it holds.
  local added total
  added=$(grep -o '"data_added_packed":[0-9]*' <<< "$out" | tail -1 | cut -d: -f2)
  total=$(grep -o '"total_bytes_processed":[0-9]*' <<< "$out" | tail -1 | cut -d: -f2)
  echo "${id:0:8} $(human_size "${added:-0}") new of $(human_size "${total:-0}")"
}

fetch() { # fetch WHICH DEST: prints the backup's name
  local which=$1 dest=$2 err list id name
  open_repo noinit "nothing was changed"
  err=$(mktemp)
  case $which in
    latest) list=$(r snapshots --json --host "$VPSKIT_APP" --tag vpskit 2>"$err") ;;
    [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z)
      list=$(r snapshots --json --host "$VPSKIT_APP" --tag "vpskit,backup=$which" 2>"$err") ;;
    *) list=$(r snapshots --json "$which" 2>"$err") || true ;;
  esac
  id=$(snapshot_field id "$list")
  name=$(grep -o '"backup=[0-9TZ]*"' <<< "$list" | tail -1 | tr -d '"' | cut -d= -f2)
  [ -n "$id" ] && [ -n "$name" ] || { rm -f "$err"; die "no offsite snapshot '$which' of $VPSKIT_APP in $RESTIC_REPOSITORY: list them with tasks/backup.py --data list=offsite"; }
  echo "vpskit offsite: fetching backup $name (snapshot ${id:0:8}) from $RESTIC_REPOSITORY" >&2
  rm -rf "$dest" "$dest.partial"
  mkdir -p "$(dirname "$dest")"
  mkdir -m 700 "$dest.partial"
  local rc=0
  long restore "$id" --target "$dest.partial" --quiet >/dev/null 2>"$err" || rc=$?
  if [ "$rc" != 0 ]; then
    local why; why=$(cause "$err"); rm -rf "$err" "$dest.partial"
    [ "$rc" != 124 ] || why="it did not finish within ${LIMIT}s"
    die "snapshot ${id:0:8} of $RESTIC_REPOSITORY cannot be read back (${why:-restic restore failed}): the repository may be damaged; nothing was changed"
  fi
  rm -f "$err"
  (cd "$dest.partial" && sha256sum --quiet -c SHA256SUMS >&2) \
    || { rm -rf "$dest.partial"; die "snapshot ${id:0:8} of $RESTIC_REPOSITORY came back with files that fail their checksums: nothing was changed"; }
  mv "$dest.partial" "$dest"
  echo "$name ${id:0:8}"
}

list() {
  open_repo noinit "nothing to list"
  r snapshots --host "$VPSKIT_APP" --tag vpskit --compact
}

case ${1:-} in
  copy) copy "${2:?BACKUP_ROOT}" "${3:?NAME}" ;;
  fetch) fetch "${2:?WHICH}" "${3:?DEST}" ;;
  list) list ;;
  *) die "usage: offsite.sh copy BACKUP_ROOT NAME | fetch WHICH DEST | list" ;;
esac
