#!/usr/bin/env bash
# vpskit restore for one app, run on the server as root by tasks/restore.py.
#
#   restore.sh APP_DIR BACKUP_ROOT NAME [local|offsite]
#
# NAME: latest, a backup name or (offsite) a restic snapshot id. An offsite backup is fetched first
# (files/offsite.sh: checked by restic and against its own checksums). Refuses a backup whose checksums or
# dump do not verify, touching nothing. Otherwise, under the app's lock and the backups' lock: a safety
# backup of the live data, the dump restored into a scratch database, then swapped in for the live one (a
# failed restore leaves the live database as it was), the media swapped in (files/media-swap.sh: all old or
# all new, even across a crash), the app started and waited for.
set -Eeuo pipefail

APP_DIR=${1:?usage: restore.sh APP_DIR BACKUP_ROOT NAME [local|offsite]}
ROOT=${2:?usage: restore.sh APP_DIR BACKUP_ROOT NAME [local|offsite]}
NAME=${3:?usage: restore.sh APP_DIR BACKUP_ROOT NAME [local|offsite]}
FROM=${4:-local}
HERE=$(cd "$(dirname "$0")" && pwd)

log() { echo "vpskit restore: $*" >&2; }
die() { log "$*"; exit 1; }

# shellcheck source=files/common.sh
. "$HERE/common.sh"  # backup_names; wait_healthy, the one definition of healthy

cd "$APP_DIR" || die "no app at $APP_DIR: deploy first"
# The app's lock: no release, rollback or stop of this app while its data is swapped.
take_lock "${VPSKIT_LOCK_WAIT:-300}" "restore of $NAME" || die "$LOCK_REFUSAL"
# The backups' lock, from before the safety backup to the end: no backup (nor its retention) in between.
mkdir -p "$ROOT"
chmod 700 "$ROOT"
take_backups_lock "$ROOT" "${VPSKIT_LOCK_WAIT:-300}" \
  || die "another backup or restore is running (lock $ROOT/.lock): try again when it ends (waited ${VPSKIT_LOCK_WAIT:-300}s)"

# What this restore leaves behind goes whatever ends it: fetched and unpacked files, an unused scratch database.
fetched="" sql="" staged="" scratch_left="" unpacked=""
cleanup() {
  rm -rf ${fetched:+"$fetched"} ${sql:+"$sql"} ${staged:+"$staged"}
  if [ -n "$scratch_left" ]; then psql -c "DROP DATABASE IF EXISTS \"$scratch_left\"" 2>/dev/null || true; fi
  if [ -n "$unpacked" ]; then media undo 2>/dev/null || true; fi  # the media unpacked beside the live ones
}
trap cleanup EXIT
where=""
if [ "$FROM" = offsite ]; then
  fetched="$ROOT/.offsite-restore"
  read -r NAME snapshot < <("$HERE/offsite.sh" fetch "$NAME" "$fetched") || exit 1
  src=$fetched
  where=" (offsite snapshot $snapshot)"
else
  if [ "$NAME" = latest ]; then
    NAME=$(backup_names "$ROOT" | tail -1)
    [ -n "$NAME" ] || die "no backup in $ROOT to restore: take one with tasks/backup.py (or restore from=offsite)"
  fi
  [[ $NAME =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || die "'$NAME' is not a backup name (like 20261128T201500Z): list them with tasks/backup.py --data list=true"
  src="$ROOT/$NAME"
  [ -d "$src" ] || die "no backup $NAME in $ROOT"
fi

log "verifying backup $NAME$where"
(cd "$src" && sha256sum --quiet -c SHA256SUMS) >&2 || die "backup $NAME is corrupt (checksum mismatch): nothing was changed"
compose() { docker compose "$@"; }
if ! db_external && [ -z "$(compose ps -q db)" ]; then die "the db service is not running: start the stack first"; fi
db_sh 'pg_restore --list' < "$src/db.dump" > /dev/null || die "backup $NAME has an unreadable dump: nothing was changed"

log "safety backup of the live data first"
safety=$(VPSKIT_BACKUP_LOCKED=1 "$HERE/backup.sh" "$APP_DIR" "$ROOT" none)
log "safety backup: $safety"

project=$(sed -n 's/^name: *//p' docker-compose.yml)
psql() { db_sh 'PGOPTIONS=--client-min-messages=warning psql -X -v ON_ERROR_STOP=1 -q -d postgres "$@"' "$@" >/dev/null; }
if db_external; then
  # A managed database's user may not create databases: the backup goes in at the swap below, as one
  # transaction (all of it, or nothing), from SQL written out first (a cut-short stream must not commit).
  log "preparing the restore into $(db_where)"
  sql="$ROOT/.restore.sql"
  { echo 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;'
    db_sh 'pg_restore --no-owner --no-privileges -f -' < "$src/db.dump"; } > "$sql" \
    || die "converting backup $NAME for the restore failed: nothing was changed"
else
  # shellcheck disable=SC2016 # expanded inside the db container
  live=$(db_sh 'printf %s "$PGDATABASE"')
  scratch="${live}_restore"
  old="${live}_before_restore"

  log "restoring into scratch database $scratch"
  psql -c "DROP DATABASE IF EXISTS \"$scratch\"" -c "CREATE DATABASE \"$scratch\""
  scratch_left=$scratch
  # shellcheck disable=SC2016 # expanded inside the db container
  if ! db_sh 'pg_restore -d "$1" --no-owner --exit-on-error' "$scratch" < "$src/db.dump"; then
    die "pg_restore into the scratch database failed: the live database is unchanged"
  fi
fi

remote=$(media_remote "$APP_DIR")
if [ -n "$remote" ]; then
  # Media in a bucket (media_bucket): unpacked here, then the bucket made equal to them after the database swap.
  log "unpacking the media for the bucket ${remote#*:}"
  staged="$ROOT/.media-restore"
  rm -rf "$staged" && mkdir -m 700 "$staged"
  tar -C "$staged" -xf "$src/media.tar" || die "unpacking the media failed: nothing was changed"
  media() { [ "$1" = swap ] && media_rclone "$APP_DIR" sync "$staged" "$remote"; }
else
  log "unpacking the media beside the live files"
  image=$(db_image)
  media() { docker run --rm --network none -i -v "${project}_media:/media" -v "$HERE/media-swap.sh:/swap.sh:ro" \
    --entrypoint sh "$image" /swap.sh "$@"; }
  unpacked=1
  media unpack < "$src/media.tar" || die "unpacking the media failed: nothing was changed"
fi

# A db server has no app here: the app servers' connections are closed, and kept out until the swap is done.
has_app=""; if compose config --services | grep -qx app; then has_app=1; fi
if ! db_external; then
  # What an earlier restore kept goes first, while the app still serves: when it cannot, nothing has changed.
  psql -c "DROP DATABASE IF EXISTS \"$old\"" \
    || die "the database $old, kept by an earlier restore, cannot be dropped (above: a connection to it?): nothing was changed"
fi

connections() { # connections DB: the sessions open on database DB (a name of the settings: no quote in it)
  db_sh "psql -XAt -d postgres -c \"select count(*) from pg_stat_activity where datname = '$1'\""
}
swap_db() { # swap_db LIVE IN OUT: database IN becomes LIVE and LIVE becomes OUT, in one transaction, once every
  # session on LIVE has ended; LIVE, whichever it is then, accepts connections again afterwards
  local n=0 rc=0
  psql -c "ALTER DATABASE \"$1\" WITH ALLOW_CONNECTIONS false" \
       -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$1' AND pid <> pg_backend_pid()" || rc=1
  # pg_terminate_backend returns before the sessions have ended: the rename waits for them (10 s at most).
  while [ "$rc" = 0 ] && [ "$(connections "$1")" != 0 ] && [ "$n" -lt 20 ]; do n=$((n + 1)); sleep 0.5; done
  [ "$rc" != 0 ] || psql --single-transaction -c "ALTER DATABASE \"$1\" RENAME TO \"$3\"" \
    -c "ALTER DATABASE \"$2\" RENAME TO \"$1\"" || rc=1
  psql -c "ALTER DATABASE \"$1\" WITH ALLOW_CONNECTIONS true" || rc=1
  return "$rc"
}
stopped=""
resume() { # resume WHY ON: after a failure once the app stopped, the app started again on ON (what it now
  # reads) and waited for; ends the restore with WHY and that outcome
  if [ -z "$stopped" ]; then die "$1"; fi
  log "starting the app again on $2"
  if compose start app >&2 && wait_healthy "${VPSKIT_HEALTH_TIMEOUT:-180}" restore; then die "$1; the app serves $2"; fi
  die "$1; the app was started again on $2 but did not become ready (above)"
}

log "swapping the restored database and media in"
if [ -n "$has_app" ]; then compose stop app >&2; stopped=1; fi
if db_external; then
  db_sh 'psql -X -q -v ON_ERROR_STOP=1 --single-transaction -o /dev/null' < "$sql" \
    || resume "restoring backup $NAME into $(db_where) failed (above): its transaction was rolled back, the live database is unchanged" "the data it had"
  log "restored into $(db_where) in one transaction"
else
  swap_db "$live" "$scratch" "$old" \
    || resume "swapping the restored database in failed (above): the live database is unchanged" "the data it had"
  scratch_left=""
fi
swapped=0; media swap || swapped=$?
unpacked=""  # swapped, or taken back below
if [ "$swapped" != 0 ]; then
  if db_external || [ -n "$remote" ]; then
    resume "the database is restored but putting the media back failed (above): run this restore again (the safety backup is $safety)" "the restored database"
  fi
  # The media as they were, and the database before this restore back in place (the restored copy is dropped).
  media undo || resume "putting the media back failed (above), and so did taking the swap back: run this restore again (the safety backup is $safety)" "the restored database"
  swap_db "$live" "$old" "$scratch" \
    || resume "putting the media back failed (above), and the database before this restore could not be put back: it is kept as $old; run this restore again (the safety backup is $safety)" "the restored database"
  scratch_left=$scratch
  resume "putting the media back failed (above): the database and the media are as they were before this restore" "the data it had"
fi

if [ -n "$has_app" ]; then
  log "starting the app"
  if ! { compose up -d app >&2 && wait_healthy "${VPSKIT_HEALTH_TIMEOUT:-180}" restore; }; then
    if db_external; then die "the app did not become ready on the restored data; the data from before is the safety backup $safety"; fi
    die "the app did not become ready on the restored data; the previous database is kept as $old (connections to it are off: ALTER DATABASE ... WITH ALLOW_CONNECTIONS true to open it)"
  fi
else
  log "the restored database serves the app servers (their open connections were closed; they reconnect)"
fi
db_external || psql -c "DROP DATABASE IF EXISTS \"$old\""
log "restored backup $NAME$where: $(sed -n 's/.*"media_files": \([0-9]*\).*/\1/p' "$src/manifest.json" || true) media files; the app version it was taken with: $(sed -n 's/.*"app_version": "\(.*\)".*/\1/p' "$src/manifest.json")"
log "the data from before this restore is the safety backup $safety; to go back to it: pyinfra inventory.py tasks/restore.py --data backup=$safety"
