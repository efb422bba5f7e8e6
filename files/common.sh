#!/usr/bin/env bash
# What vpskit's server scripts share, sourced by backup.sh and offsite.sh
# (releases are the server program's: vpskit/server, beside these scripts as vpskit-server).

VPSKIT_SERVER="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/vpskit-server"

# Health, as the server program states it (vpskit/server/stack.py and health.py, the one definition of healthy),
# in the app's folder.
stack_states() { "$VPSKIT_SERVER" stack states --app-dir "$PWD"; }  # SERVICE STATUS/HEALTH ok|no; 0: healthy

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
# one (DATABASE_URL) through a one-off client container; the server program decides which (vpskit/server/database.py).
db_sh() { "$VPSKIT_SERVER" db sh --app-dir "$PWD" "$@"; }  # db_sh SCRIPT [ARGS...]: stdin and stdout pass through
db_external() { "$VPSKIT_SERVER" db external --app-dir "$PWD"; }
db_where() { "$VPSKIT_SERVER" db where --app-dir "$PWD"; }  # "the db service" or the external server's address
db_image() { "$VPSKIT_SERVER" db image --app-dir "$PWD"; }

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
