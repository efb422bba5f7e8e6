#!/usr/bin/env bash
# vpskit backup for one app, run on the server as root (by tasks/backup.py and the daily systemd timer).
#
#   backup.sh APP_DIR BACKUP_ROOT [DAILY WEEKLY MONTHLY]
#
# The database as a pg_dump custom-format archive streamed from the db container to disk (never held in
# memory), the media volume as a tar, a SHA256SUMS sidecar and a manifest. Written under a .partial name,
# fsynced, checked with pg_restore --list, then renamed: a folder without .partial is a complete, verified
# backup. Retention runs only after a successful backup and never removes the newest good backup.
# A lock shared with restore.sh keeps two backups (or a backup and a restore) from overlapping.
set -Eeuo pipefail

APP_DIR=${1:?usage: backup.sh APP_DIR BACKUP_ROOT [DAILY WEEKLY MONTHLY]}
ROOT=${2:?usage: backup.sh APP_DIR BACKUP_ROOT [DAILY WEEKLY MONTHLY]}
KEEP_DAILY=${3:-7}
KEEP_WEEKLY=${4:-4}
KEEP_MONTHLY=${5:-6}
NOW=${VPSKIT_BACKUP_TIME:-$(date -u +%Y%m%dT%H%M%SZ)}  # settable so retention can be tested on a calendar

log() { echo "vpskit backup: $*" >&2; }
die() { log "$*"; exit 1; }

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=files/common.sh
. "$HERE/common.sh"  # backup_names
cd "$APP_DIR" || die "no app at $APP_DIR: deploy first"
mkdir -p "$ROOT"
chmod 700 "$ROOT"
exec 9>"$ROOT/.lock"
flock -n 9 || die "another backup or restore is running (lock $ROOT/.lock): try again when it ends"

compose() { docker compose "$@"; }
db_id=$(compose ps -q db)
[ -n "$db_id" ] || die "the db service is not running: start the stack (pyinfra inventory.py deploy.py)"
project=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$db_id")
rm -rf "$ROOT"/*.partial  # left by an interrupted backup; never counted as a backup

dest="$ROOT/$NOW"
work="$dest.partial"
[ -e "$dest" ] && die "backup $NOW exists already"
rm -rf "$work"
mkdir -m 700 "$work"
# Whatever ends this script before the rename (an error, a die, a signal) takes the partial folder with it.
trap 'rm -rf "$work"' EXIT

t0=$(date +%s)
# shellcheck disable=SC2016 # expanded inside the container, where the variables are set
compose exec -T db sh -c 'pg_dump -Fc -U "$POSTGRES_USER" -d "$POSTGRES_DB"' > "$work/db.dump"
compose exec -T db sh -c 'pg_restore --list' < "$work/db.dump" > /dev/null \
  || die "the dump did not pass pg_restore --list: nothing kept"
docker run --rm --network none -v "${project}_media:/media:ro" --entrypoint tar "$(docker inspect -f '{{.Config.Image}}' "$db_id")" \
  -C /media -cf - . > "$work/media.tar"

(cd "$work" && sha256sum db.dump media.tar > SHA256SUMS)
pg_version=$(compose exec -T db postgres --version | awk '{print $NF}')
app_image=$(docker inspect -f '{{.Config.Image}}' "$(compose ps -q app)" 2>/dev/null || echo "")
# Every value is read before the manifest is written, so a failing read stops the backup (set -e) instead
# of leaving an empty field in invalid JSON.
db_bytes=$(stat -c %s "$work/db.dump")
media_bytes=$(stat -c %s "$work/media.tar")
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
[[ $db_bytes =~ ^[0-9]+$ && $media_bytes =~ ^[0-9]+$ ]] || die "could not read the sizes of the backup files"
cat > "$work/manifest.json" <<EOF
{
  "name": "$NOW",
  "created": "$created",
  "project": "$project",
  "app_image": "$app_image",
  "app_version": "${app_image##*:}",
  "postgres_version": "$pg_version",
  "db_dump_bytes": $db_bytes,
  "media_tar_bytes": $media_bytes,
  "seconds": $(( $(date +%s) - t0 ))
}
EOF
sync "$work"/* "$work"
mv "$work" "$dest"
sync "$ROOT"
trap - EXIT
log "backup $NOW complete: db $db_bytes bytes, media $media_bytes bytes"

# Retention: the newest backup of each of the last KEEP_DAILY days, KEEP_WEEKLY ISO weeks and KEEP_MONTHLY
# months survives; so does every backup of the last 24 hours (a pre-update backup next to the daily one)
# and the newest whatever the counts. KEEP_DAILY=none skips pruning (the safety backup of a restore).
[ "$KEEP_DAILY" = none ] && { echo "$NOW"; exit 0; }
stamp() { date -u -d "${1:0:4}-${1:4:2}-${1:6:2} ${1:9:2}:${1:11:2}:${1:13:2}" +%s; }
recent=$(( $(stamp "$NOW") - 86400 ))
declare -A day_seen week_seen month_seen
days=0 weeks=0 months=0 newest=1
for b in $(backup_names "$ROOT" | sort -r); do
  d=${b:0:8}
  w=$(date -u -d "$d" +%G%V)
  m=${b:0:6}
  keep=$newest
  newest=0
  [ "$(stamp "$b")" -gt "$recent" ] && keep=1
  if [ -z "${day_seen[$d]:-}" ] && [ "$days" -lt "$KEEP_DAILY" ]; then day_seen[$d]=1; days=$((days + 1)); keep=1; fi
  if [ -z "${week_seen[$w]:-}" ] && [ "$weeks" -lt "$KEEP_WEEKLY" ]; then week_seen[$w]=1; weeks=$((weeks + 1)); keep=1; fi
  if [ -z "${month_seen[$m]:-}" ] && [ "$months" -lt "$KEEP_MONTHLY" ]; then month_seen[$m]=1; months=$((months + 1)); keep=1; fi
  if [ "$keep" = 0 ]; then
    rm -rf "${ROOT:?}/$b"
    log "pruned $b"
  fi
done
echo "$NOW"
