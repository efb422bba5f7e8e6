#!/usr/bin/env bash
# vpskit backup for one app, run on the server as root (by tasks/backup.py and the daily systemd timer).
#
#   backup.sh APP_DIR BACKUP_ROOT [DAILY WEEKLY MONTHLY [LOCK_WAIT]]
#
# The database as a pg_dump custom-format archive streamed from the db container (or, with an external
# database, a client container here) to disk (never held in memory), the media (the app's volume, or its bucket when media_bucket is set) as a tar, each media file's
# checksum, a SHA256SUMS sidecar and a manifest (with the rows of every table the dump holds, for the drill).
# Written under a .partial name, fsynced, checked with pg_restore --list, then renamed: a folder without
# .partial is a complete, verified backup.
# Retention runs only after a successful backup and never removes the newest good backup. Then, when
# backup_offsite is set, the copy offsite (files/offsite.sh): its failure fails the backup, which stays here.
# A lock shared with restores and drills keeps two backups (or a backup and a restore) from overlapping: a backup waits
# up to LOCK_WAIT seconds (300) for the one holding it. restic's copy offsite is bounded too (offsite.sh).
set -Eeuo pipefail

APP_DIR=${1:?usage: backup.sh APP_DIR BACKUP_ROOT [DAILY WEEKLY MONTHLY [LOCK_WAIT]]}
ROOT=${2:?usage: backup.sh APP_DIR BACKUP_ROOT [DAILY WEEKLY MONTHLY [LOCK_WAIT]]}
KEEP_DAILY=${3:-7}
KEEP_WEEKLY=${4:-4}
KEEP_MONTHLY=${5:-6}
LOCK_WAIT=${6:-300}
NOW=${VPSKIT_BACKUP_TIME:-$(date -u +%Y%m%dT%H%M%SZ)}  # settable so retention can be tested on a calendar

log() { echo "vpskit backup: $*" >&2; }
die() { log "$*"; exit 1; }

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=files/common.sh
. "$HERE/common.sh"  # backup_names
cd "$APP_DIR" || die "no app at $APP_DIR: deploy first"
mkdir -p "$ROOT"
chmod 700 "$ROOT"
if [ "${VPSKIT_BACKUP_LOCKED:-}" != 1 ]; then  # a restore holds this lock already for its safety backup
  take_backups_lock "$ROOT" "$LOCK_WAIT" \
    || die "another backup or restore is running (lock $ROOT/.lock): try again when it ends (waited ${LOCK_WAIT}s)"
fi

compose() { docker compose "$@"; }
# The db service here, or an external database (DATABASE_URL) reached from this server (common.sh db_sh).
if ! db_external && [ -z "$(compose ps -q db)" ]; then
  die "the db service is not running: start the stack (pyinfra inventory.py deploy.py)"
fi
project=$(sed -n 's/^name: *//p' docker-compose.yml)
rm -rf "$ROOT"/*.partial  # left by an interrupted backup; never counted as a backup

dest="$ROOT/$NOW"
work="$dest.partial"
[ -e "$dest" ] && die "backup $NOW exists already"

free_mb() { df -Pm "$ROOT" | awk 'NR == 2 {print $4}'; }
# The last backup's size (and a fifth more) is what this one needs: refused before anything is written.
last=$(backup_names "$ROOT" | tail -1)
if [ -n "$last" ] && [ -f "$ROOT/$last/manifest.json" ]; then
  need=$(sed -n 's/.*"\(db_dump\|media_tar\)_bytes": \([0-9]*\).*/\2/p' "$ROOT/$last/manifest.json" \
    | awk '{s += $1} END {printf "%d", s * 1.2 / 1048576 + 1}')
  if [ "$(free_mb)" -lt "${need:-0}" ]; then
    die "not enough disk space for a backup: $(free_mb) MB free in $ROOT, the last backup ($last) needed about $(( need * 5 / 6 )) MB; free space (older backups, docker image prune) or set backup_root to a bigger disk"
  fi
fi
failed_writing() { # failed_writing WHAT: one line with the cause (a full disk named as such)
  if [ "$(free_mb)" -lt 2 ]; then
    die "the disk filled up while writing $1 ($(free_mb) MB free in $ROOT): free space (older backups, docker image prune) or set backup_root to a bigger disk; nothing kept"
  fi
  die "writing $1 failed (above): nothing kept"
}

rm -rf "$work"
mkdir -m 700 "$work"
# Whatever ends this script before the rename (an error, a die, a signal) takes the partial folder with it.
trap 'rm -rf "$work"' EXIT

t0=$(date +%s)
db_sh 'pg_dump -Fc' > "$work/db.dump" || failed_writing "the database dump of $(db_where)"
db_sh 'pg_restore --list' < "$work/db.dump" > /dev/null || die "the dump did not pass pg_restore --list: nothing kept"
# Rows per table as the dump holds them (one line per row in each COPY block), for the drill to compare.
db_sh 'pg_restore --data-only -f -' < "$work/db.dump" \
  | awk '/^COPY / {t = $2; n = 0; c = 1; next} c && $0 == "\\." {print n, t; c = 0; next} c {n++}' \
  > "$work/tables" || failed_writing "the row counts"
remote=$(media_remote "$APP_DIR")
if [ -n "$remote" ]; then
  # Media in a bucket (media_bucket): its files, fetched here, go into the same archive as a volume's would.
  mkdir "$work/media"
  media_rclone "$APP_DIR" copy "$remote" "$work/media" || failed_writing "the media from the bucket ${remote#*:}"
  tar -C "$work/media" -cf "$work/media.tar" . || failed_writing "the media archive"
  rm -rf "${work:?}/media"
  from=", from the bucket ${remote#*:}"
else
  docker run --rm --network none -v "${project}_media:/media:ro" --entrypoint tar "$(db_image)" \
    -C /media -cf - . > "$work/media.tar" || failed_writing "the media archive"
  from=""
fi
# Each media file's checksum, read from the archive itself: what a restore puts back.
# shellcheck disable=SC2016 # expanded by the shell tar starts for each file
tar -xf "$work/media.tar" --to-command='sha256sum | sed "s|-\$|$TAR_FILENAME|"' > "$work/media.sha256" \
  || failed_writing "the media checksums"

(cd "$work" && sha256sum db.dump media.tar media.sha256 > SHA256SUMS)
pg_version=$(db_sh 'psql -XAtc "show server_version"' | awk '{print $1}')
app_image=$(docker inspect -f '{{.Config.Image}}' "$(compose ps -q app | head -1)" 2>/dev/null || echo "")
# Every value is read before the manifest is written, so a failing read stops the backup (set -e) instead
# of leaving an empty field in invalid JSON.
db_bytes=$(stat -c %s "$work/db.dump")
media_bytes=$(stat -c %s "$work/media.tar")
media_files=$(wc -l < "$work/media.sha256")
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
[[ $db_bytes =~ ^[0-9]+$ && $media_bytes =~ ^[0-9]+$ ]] || die "could not read the sizes of the backup files"
# "schema.table": rows, one per line (a quoted identifier's quotes escaped for JSON).
tables=$(awk '{gsub(/"/, "\\\"", $2); printf "%s    \"%s\": %d", (NR > 1 ? ",\n" : ""), $2, $1}' "$work/tables")
rm -f "$work/tables"
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
  "media_files": $media_files,
  "media_bucket": "${remote#*:}",
  "seconds": $(( $(date +%s) - t0 )),
  "tables": {
$tables
  }
}
EOF
sync "$work"/* "$work"
mv "$work" "$dest"
sync "$ROOT"
trap - EXIT
dumped=""; if db_external; then dumped=" (pg_dump of $(db_where), from this server)"; fi
log "backup $NOW complete in $(( $(date +%s) - t0 ))s: database $(human_size "$db_bytes")$dumped, media $(human_size "$media_bytes") ($media_files files$from), in $dest"

# A restore's safety backup (KEEP_DAILY=none) is neither pruned nor copied offsite: it is the way back from
# that restore on this server, not a copy of the site (and must never become the newest offsite backup).
[ "$KEEP_DAILY" = none ] && { echo "$NOW"; exit 0; }

# Retention (common.sh gfs_keep, the same rule offsite.sh applies to the remote copies).
kept=$(backup_names "$ROOT" | gfs_keep "$NOW" "$KEEP_DAILY" "$KEEP_WEEKLY" "$KEEP_MONTHLY")
for b in $(backup_names "$ROOT"); do
  if ! grep -qx "$b" <<< "$kept"; then
    rm -rf "${ROOT:?}/$b"
    log "pruned $b"
  fi
done

# The copy offsite once the backup verified here (backup_offsite): its failure fails this backup, whose local
# copy stays; the deploy's pre-update backup only warns (VPSKIT_OFFSITE_SOFT), so a release is not held up.
repository=$(offsite_repository "$APP_DIR")
if [ -n "$repository" ]; then
  t1=$(date +%s)
  if copied=$("$HERE/offsite.sh" copy "$ROOT" "$NOW"); then
    log "offsite copy of $NOW: snapshot ${copied%% *} in $repository (${copied#* }, $(( $(date +%s) - t1 ))s)"
  elif [ "${VPSKIT_OFFSITE_SOFT:-}" = 1 ]; then
    log "WARNING: the offsite copy of $NOW failed (above); the local backup is kept and the update goes on"
  else
    exit 1
  fi
fi
echo "$NOW"
