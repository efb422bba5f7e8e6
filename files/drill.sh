#!/usr/bin/env bash
# vpskit restore drill, run on the server as root by tasks/restore.py --data drill=true and the drill timer.
#
#   drill.sh APP_DIR BACKUP_ROOT WHICH local|offsite
#
# Restores a backup (latest, or a name) into a scratch database beside the live one and its media into a
# scratch folder, compares the rows of every table with the counts its manifest recorded and every media
# file with its checksum, then removes the scratch copies. Nothing live is touched: not the database, not
# the media volume, not the app.
set -Eeuo pipefail

APP_DIR=${1:?usage: drill.sh APP_DIR BACKUP_ROOT WHICH local|offsite}
ROOT=${2:?usage: drill.sh APP_DIR BACKUP_ROOT WHICH local|offsite}
WHICH=${3:-latest}
FROM=${4:-local}
HERE=$(cd "$(dirname "$0")" && pwd)

log() { echo "vpskit drill: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# shellcheck source=files/common.sh
. "$HERE/common.sh"  # backup_names
cd "$APP_DIR" || die "no app at $APP_DIR: deploy first"
mkdir -p "$ROOT"
take_backups_lock "$ROOT" "${VPSKIT_LOCK_WAIT:-300}" \
  || die "a backup or restore held $ROOT/.lock for ${VPSKIT_LOCK_WAIT:-300}s: run the drill again when it ends"

work="$ROOT/.drill"
if db_external; then
  # An external database: the drill's scratch database is in a throwaway postgres here, without a network
  # (the managed database's user may not create databases, and the live server is left alone).
  scratch=drill
  box="vpskit-drill-$(basename "$APP_DIR")"
  # Over its socket, where the image trusts local connections.
  psql() { docker exec -i -u postgres "$box" psql -X -U postgres -v ON_ERROR_STOP=1 -q "$@"; }
  restore() { docker exec -i -u postgres "$box" pg_restore -U postgres -d "$scratch" --no-owner --no-privileges --exit-on-error; }
  cleanup() { docker rm -f -v "$box" >/dev/null 2>&1 || true; rm -rf "$work"; }
  trap cleanup EXIT
  cleanup
  # The image wants a superuser password; this one is thrown away with the container (no network either).
  POSTGRES_PASSWORD=$(head -c 18 /dev/urandom | base64) docker run -d --name "$box" --network none \
    -e POSTGRES_PASSWORD "$(db_image)" >/dev/null || die "could not start a scratch postgres for the drill (above)"
  # Ready on TCP: the image's first-start setup answers on the socket before it is done.
  for _ in $(seq 60); do docker exec "$box" pg_isready -q -h 127.0.0.1 && break; sleep 1; done
  docker exec "$box" pg_isready -q -h 127.0.0.1 || die "the drill's scratch postgres did not start within 60s"
else
  [ -n "$(docker compose ps -q db)" ] || die "the db service is not running: start the stack first"
  # shellcheck disable=SC2016 # expanded inside the db container
  scratch="$(db_sh 'printf %s "$PGDATABASE"')_drill"
  psql() { db_sh 'psql -X -v ON_ERROR_STOP=1 -q "$@"' "$@"; }
  # shellcheck disable=SC2016 # expanded inside the db container
  restore() { db_sh 'pg_restore -d "$1" --no-owner --exit-on-error' "$scratch"; }
  cleanup() { psql -d postgres -c "DROP DATABASE IF EXISTS \"$scratch\"" >/dev/null 2>&1 || true; rm -rf "$work"; }
  trap cleanup EXIT
  cleanup
fi
mkdir -m 700 "$work"
t0=$SECONDS

where=""
if [ "$FROM" = offsite ]; then
  read -r name snapshot < <("$HERE/offsite.sh" fetch "$WHICH" "$work/backup") || exit 1
  src="$work/backup"
  where=" (offsite snapshot $snapshot)"
else
  name=$WHICH
  [ "$name" = latest ] && name=$(backup_names "$ROOT" | tail -1)
  [ -n "$name" ] || die "no backup in $ROOT to drill: take one with tasks/backup.py"
  src="$ROOT/$name"
  [ -d "$src" ] || die "no backup $name in $ROOT"
  (cd "$src" && sha256sum --quiet -c SHA256SUMS >&2) || die "backup $name is corrupt (checksum mismatch)"
fi
# Room first, as the backup checks it: the scratch copy of the database goes where Docker keeps its data (beside
# the live database), about the live one's size; the media are unpacked here. A fifth more of each, and both
# together when they share a disk. The weekly drill must never be what fills a small server's disk.
# shellcheck disable=SC2016 # expanded by the shell in the db container
live_mb=$(db_sh 'psql -XAt -c "select pg_database_size(current_database())"' | awk '{printf "%d", $1 * 1.2 / 1048576 + 1}')
media_mb=$(awk '{printf "%d", $1 * 1.2 / 1048576 + 1}' <<< "$(stat -c %s "$src/media.tar")")
data_dir=$(docker info -f '{{.DockerRootDir}}')
free_mb() { df -Pm "$1" | awk 'NR == 2 {print $4}'; }
if [ "$(df -P "$data_dir" | awk 'NR == 2 {print $1}')" = "$(df -P "$ROOT" | awk 'NR == 2 {print $1}')" ]; then
  room=$(( live_mb + media_mb )); free=$(free_mb "$ROOT"); where_needed="$ROOT and $data_dir (one disk)"
elif [ "$(free_mb "$data_dir")" -lt "$live_mb" ]; then
  room=$live_mb; free=$(free_mb "$data_dir"); where_needed=$data_dir
else
  room=$media_mb; free=$(free_mb "$ROOT"); where_needed=$ROOT
fi
[ "$free" -ge "$room" ] || die "not enough disk space for the drill: $free MB free in $where_needed, its scratch copies need about $room MB (the database's size and the media's, and a fifth more); nothing was restored; free space (older backups, docker image prune) or set drill_schedule = \"\" until the disk is bigger"
log "restoring backup $name$where into the scratch database $scratch"

# The rows its manifest recorded: `"schema.table": N` lines of its "tables" object.
sed -n '/"tables": {/,/}/s/^ *"\(.*\)": \([0-9]*\),\{0,1\}$/\2 \1/p' "$src/manifest.json" | sed 's/\\"/"/g' > "$work/expected"
[ -s "$work/expected" ] || die "backup $name records no row counts (taken by an older vpskit): take a new backup, then drill"

psql -d postgres -c "CREATE DATABASE \"$scratch\""
restore < "$src/db.dump" || die "backup $name does not restore: pg_restore into a scratch database failed (above)"

# One count per recorded table, in the same order, from the restored copy.
awk '{sub(/^[0-9]+ /, ""); print "SELECT count(*) FROM " $0 ";"}' "$work/expected" \
  | psql -d "$scratch" -t -A > "$work/actual" 2>"$work/err" || die "counting rows failed: $(head -1 "$work/err")"
mismatch=$(paste -d' ' "$work/actual" "$work/expected" \
  | awk '$1 != $2 {sub(/^[0-9]+ [0-9]+ /, "", $0); printf "%s", sep $0; sep = ", "}')
if [ -n "$mismatch" ]; then
  first=$(paste -d' ' "$work/actual" "$work/expected" | awk '$1 != $2 {print; exit}')
  read -r got want table <<< "$first"
  die "backup $name: table $table has $got rows restored, its manifest recorded $want (differing: $mismatch)"
fi
tables=$(wc -l < "$work/expected")
rows=$(awk '{s += $1} END {print s + 0}' "$work/expected")

mkdir "$work/media"
tar -C "$work/media" -xf "$src/media.tar" || die "backup $name: the media archive does not unpack"
files=$(wc -l < "$src/media.sha256")
bad=$(cd "$work/media" && sha256sum -c "$src/media.sha256" 2>/dev/null | grep -c -v ': OK$' || true)
[ "$bad" = 0 ] || die "backup $name: $bad of $files media files do not match their checksums"

log "passed in $((SECONDS - t0))s: backup $name$where restores; $tables tables, $rows rows as its manifest recorded; $files media files match their checksums"
