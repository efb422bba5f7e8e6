"""A restore of one app (tasks/restore.py): a backup here, by name or the latest, or offsite (fetched first by
vpskit/server/offsite.py and checked by restic and against its own checksums).

A backup whose checksums or dump do not verify is refused with nothing changed. Otherwise, under the app's lock
and the backups' lock: a safety backup of the live data; the dump restored into a scratch database beside the
live one (an external database: converted to SQL first, applied later in one transaction); the media unpacked
beside the live files. Only then the app stops, the restored database is swapped in by renames in one
transaction, the media swapped in (media-swap.sh: all old or all new, even across a crash), and the app started
and waited for. Every failure says what serves now and how to go back (the safety backup).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from . import conf
from .backup import rclone
from .backups import NAME
from .database import Database, major, major_key
from .docker import Docker
from .drill import bad_checksums
from .effects import Effects
from .locks import app_and_backups
from .proxy import Proxy, close_for, set_maintenance
from .stack import wait_healthy


class RestoreFailed(Exception):
    """The restore ends here with this one line (what serves now, and the way back, are in it)."""


def connections_sql(database: str) -> str:
    return f"select count(*) from pg_stat_activity where datname = '{database}'"  # noqa: S608 - the app's own name


def swap_sql(live: str, into: str, out: str) -> list[str]:
    """The renames that make database `into` the live one and the live one `out`, in one transaction."""
    return [f'ALTER DATABASE "{live}" RENAME TO "{out}"', f'ALTER DATABASE "{into}" RENAME TO "{live}"']


def manifest_facts(text: str) -> tuple[str, str]:
    """(media files, app version) a backup's manifest recorded, for the closing line."""
    try:
        m = json.loads(text)
    except ValueError:
        return "?", "?"
    return str(m.get("media_files", "?")), str(m.get("app_version", "?"))


def newer_dump(manifest_text: str, server_version: str, name: str) -> str:
    """The refusal when the backup was taken from a newer PostgreSQL major than the server it would go into ("" when
    not): an older pg_restore does not know a newer archive, nor an older server what a newer dump sets. A backup
    of an older major restores into a newer one (pg_restore reads older archives)."""
    try:
        taken = major(str(json.loads(manifest_text).get("postgres_version", "")))
    except ValueError:
        return ""
    here = major(server_version)
    if not taken or not here or major_key(taken) <= major_key(here):
        return ""
    return (f"backup {name} was taken from PostgreSQL {taken}, newer than this server's PostgreSQL {here}, which "
            f"cannot restore it: restore it on a PostgreSQL {taken} server (postgres_image); nothing was changed")


class Restore:
    def __init__(self, app_dir: Path, root: Path, name: str, source: str, fx: Effects, bin_dir: Path,
                 lock_wait: int = 300, health_timeout: int = 180):
        self.app_dir, self.root, self.name, self.source = app_dir, root, name, source
        self.fx, self.bin, self.lock_wait, self.health_timeout = fx, bin_dir, lock_wait, health_timeout
        self.d = Docker(fx)
        self.db = Database(self.d, app_dir)
        self.external = self.db.external()
        self.fetched = self.sql = self.staged = None
        self.scratch_left = ""  # a scratch database to drop whatever ends the restore
        self.unpacked = False  # media unpacked beside the live files, to take back whatever ends the restore
        self.stopped = False  # the app was stopped for the swap
        self.safety = ""
        self.remote = ""
        self.proxy = Proxy(fx)
        self.closed_site = False  # closed by this restore (maintenance page): opened again whatever ends it

    def say(self, text: str) -> None:
        self.fx.say(f"vpskit restore: {text}")

    # --- effects, each one line here
    def psql(self, *sql: str) -> bool:
        """Statements in the maintenance database, each its own -c (quiet: warnings and errors only)."""
        args = [a for s in sql for a in ("-c", s)]
        r = self.fx.run(*self.db.argv('PGOPTIONS=--client-min-messages=warning psql -X -v ON_ERROR_STOP=1 -q -d '
                                      'postgres "$@"', *args))
        if not r.ok:
            self.fx.say(r.err.strip())
        return r.ok

    def compose(self, *args: str) -> bool:
        return self.fx.run("docker", "compose", *args, show=True).ok

    def media(self, step: str, stdin: Path | None = None) -> bool:
        """A step of the media swap: in the app's volume (media-swap.sh in a throwaway container), or for media
        in a bucket, the bucket made equal to the unpacked files (swap only)."""
        if self.remote:
            if step != "swap":
                return True
            args, env = rclone(self.app_dir.name, "sync", str(self.staged), self.remote)
            return self.fx.run(*args, env=env, show=True).ok
        project = self.project()
        r = self.fx.run("docker", "run", "--rm", "--network", "none", "-i", "-v", f"{project}_media:/media", "-v",
                        f"{self.bin}/media-swap.sh:/swap.sh:ro", "--entrypoint", "sh", self.db.image(), "/swap.sh",
                        step, stdin=stdin)
        if not r.ok:
            self.fx.say((r.err + r.out).strip())
        return r.ok

    def project(self) -> str:
        m = re.search(r"^name: *(\S+)", (self.app_dir / "docker-compose.yml").read_text(), re.M)
        return m.group(1) if m else self.app_dir.name

    # --- the restore
    def run(self) -> int:
        with app_and_backups(self.app_dir, self.root, self.fx, self.lock_wait, f"restore of {self.name}") as refusal:
            try:
                if refusal:
                    raise RestoreFailed(refusal)
                self.restore()
                return 0
            except RestoreFailed as failed:
                self.say(str(failed))
                return 1
            finally:
                self.cleanup()

    def cleanup(self) -> None:
        """What this restore leaves behind goes whatever ends it: fetched and unpacked files, an unused scratch
        database, media unpacked beside the live ones."""
        for path in (self.fetched, self.sql, self.staged):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if self.scratch_left:
            self.psql(f'DROP DATABASE IF EXISTS "{self.scratch_left}"')
        if self.unpacked:
            self.media("undo")
        if self.closed_site:
            set_maintenance(self.app_dir, False, self.fx, self.proxy)

    def close_site(self) -> None:
        """The maintenance page while the app is stopped, rather than a gateway error."""
        self.closed_site = close_for(self.app_dir, self.fx, self.proxy, "restore")

    def source_folder(self) -> tuple[Path, str]:
        if self.source == "offsite":
            from .offsite import Offsite, OffsiteFailed

            self.fetched = self.root / ".offsite-restore"
            try:
                self.name, snapshot = Offsite(self.app_dir.name).fetch(self.name, self.fetched)
            except OffsiteFailed as failed:
                self.fx.say(f"vpskit offsite: {failed}")
                raise RestoreFailed(f"the offsite backup {self.name} could not be fetched (above): nothing was "
                                    "changed") from failed
            return self.fetched, f" (offsite snapshot {snapshot})"
        if self.name == "latest":
            names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name))
            if not names:
                raise RestoreFailed(f"no backup in {self.root} to restore: take one with tasks/backup.py (or restore "
                                    "from=offsite)")
            self.name = names[-1]
        if not NAME.match(self.name):
            raise RestoreFailed(f"'{self.name}' is not a backup name (like 20261128T201500Z): list them with "
                                "tasks/backup.py --data list=true")
        src = self.root / self.name
        if not src.is_dir():
            raise RestoreFailed(f"no backup {self.name} in {self.root}")
        return src, ""

    def restore(self) -> None:
        src, where = self.source_folder()
        name = self.name
        self.say(f"verifying backup {name}{where}")
        if bad_checksums(src, src / "SHA256SUMS"):
            raise RestoreFailed(f"backup {name} is corrupt (checksum mismatch): nothing was changed")
        if not self.external and not self.d.ids("db", all_=False):
            raise RestoreFailed("the db service is not running: start the stack first")
        server_version = self.db.server_version()
        if refusal := newer_dump((src / "manifest.json").read_text() if (src / "manifest.json").exists() else "",
                                 server_version, name):
            raise RestoreFailed(refusal)
        if not self.fx.run(*self.db.argv("pg_restore --list"), stdin=src / "db.dump").ok:
            raise RestoreFailed(f"backup {name} has an unreadable dump: nothing was changed")

        self.say("safety backup of the live data first")
        made = self.fx.run(str(self.bin / "vpskit-server"), "backup", "--app-dir", str(self.app_dir), "--backups",
                           str(self.root), "--keep", "none", stderr_shown=True,
                           env={**os.environ, "VPSKIT_BACKUP_LOCKED": "1"})
        if not made.ok or not made.out.strip():
            raise RestoreFailed("the safety backup failed (above): nothing was changed")
        self.safety = made.out.strip().splitlines()[-1]
        self.say(f"safety backup: {self.safety}")

        live = scratch = old = ""
        if self.external:
            # A managed database's user may not create databases: the backup goes in at the swap below, as one
            # transaction (all of it, or nothing), from SQL written out first (a cut-short stream must not commit).
            self.say(f"preparing the restore into {self.db.where()}")
            self.sql = self.root / ".restore.sql"
            sql = self.fx.run(*self.db.argv("pg_restore --no-owner --no-privileges -f -"), stdin=src / "db.dump")
            if not sql.ok:
                raise RestoreFailed(f"converting backup {name} for the restore failed: nothing was changed")
            fd = os.open(self.sql, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("DROP SCHEMA public CASCADE; CREATE SCHEMA public;\n" + sql.out)
        else:
            live = self.db.sh('printf %s "$PGDATABASE"').out.strip()
            scratch, old = f"{live}_restore", f"{live}_before_restore"
            self.say(f"restoring into scratch database {scratch}")
            if not self.psql(f'DROP DATABASE IF EXISTS "{scratch}"', f'CREATE DATABASE "{scratch}"'):
                raise RestoreFailed(f"could not create the scratch database {scratch} (above): nothing was changed")
            self.scratch_left = scratch
            restored = self.fx.run(*self.db.restore_into(scratch),
                                   stdin=src / "db.dump")
            if not restored.ok:
                self.fx.say(restored.err.strip())
                raise RestoreFailed("pg_restore into the scratch database failed: the live database is unchanged")

        self.remote = media_remote(self.app_dir)
        if self.remote:
            self.say(f"unpacking the media for the bucket {self.remote.split(':', 1)[-1]}")
            self.staged = self.root / ".media-restore"
            shutil.rmtree(self.staged, ignore_errors=True)
            self.staged.mkdir(mode=0o700)
            if not self.fx.run("tar", "-C", str(self.staged), "-xf", str(src / "media.tar")).ok:
                raise RestoreFailed("unpacking the media failed: nothing was changed")
        else:
            self.say("unpacking the media beside the live files")
            self.unpacked = True
            if not self.media("unpack", stdin=src / "media.tar"):
                raise RestoreFailed("unpacking the media failed: nothing was changed")

        has_app = "app" in self.d.services()  # a db server: the app servers' connections are closed instead
        if not self.external and not self.psql(f'DROP DATABASE IF EXISTS "{old}"'):
            raise RestoreFailed(f"the database {old}, kept by an earlier restore, cannot be dropped (above: a "
                                "connection to it?): nothing was changed")

        self.say("swapping the restored database and media in")
        if has_app:
            self.close_site()
            self.compose("stop", "app")
            self.stopped = True
        if self.external:
            applied = self.fx.run(*self.db.argv("psql -X -q -v ON_ERROR_STOP=1 --single-transaction -o /dev/null"),
                                  stdin=self.sql)
            if not applied.ok:
                self.fx.say(applied.err.strip())
                rolled_back = "its transaction was rolled back, the live database is unchanged"
                self.resume(f"restoring backup {name} into {self.db.where()} failed (above): {rolled_back}",
                            "the data it had")
            self.say(f"restored into {self.db.where()} in one transaction")
        else:
            if not self.swap_db(live, scratch, old):
                self.resume("swapping the restored database in failed (above): the live database is unchanged",
                            "the data it had")
            self.scratch_left = ""
        swapped = self.media("swap")
        self.unpacked = False  # swapped, or taken back below
        if not swapped:
            self.media_failed(live, scratch, old)

        if has_app:
            self.say("starting the app")
            if not (self.compose("up", "-d", "app") and wait_healthy(self.fx, self.health_timeout, "restore")):
                if self.external:
                    raise RestoreFailed("the app did not become ready on the restored data; the data from before is "
                                        f"the safety backup {self.safety}")
                kept = "the app did not become ready on the restored data; the previous database is kept as"
                raise RestoreFailed(f"{kept} {old} (connections to it are off: ALTER DATABASE ... WITH "
                                    "ALLOW_CONNECTIONS true to open it)")
        else:
            self.say("the restored database serves the app servers (their open connections were closed; they "
                     "reconnect)")
        if not self.external:
            self.psql(f'DROP DATABASE IF EXISTS "{old}"')
        files, version = manifest_facts((src / "manifest.json").read_text())
        self.say(f"restored backup {name}{where}: {files} media files; the app version it was taken with: {version}")
        self.say(f"the data from before this restore is the safety backup {self.safety}; to go back to it: pyinfra "
                 f"inventory.py tasks/restore.py --data backup={self.safety}")

    def media_failed(self, live: str, scratch: str, old: str) -> None:
        """The media swap failed after the database's: the media as they were, and the database from before this
        restore back in place (the restored copy dropped); where that cannot be, what to run."""
        again = f"run this restore again (the safety backup is {self.safety})"
        if self.external or self.remote:
            self.resume(f"the database is restored but putting the media back failed (above): {again}",
                        "the restored database")
        if not self.media("undo"):
            self.resume(f"putting the media back failed (above), and so did taking the swap back: {again}",
                        "the restored database")
        if not self.swap_db(live, old, scratch):
            self.resume(f"putting the media back failed (above), and the database before this restore could not be "
                        f"put back: it is kept as {old}; {again}", "the restored database")
        self.scratch_left = scratch
        self.resume("putting the media back failed (above): the database and the media are as they were before this "
                    "restore", "the data it had")

    def swap_db(self, live: str, into: str, out: str) -> bool:
        """Database `into` becomes `live` and `live` becomes `out`, in one transaction, once every session on `live`
        has ended; `live`, whichever it is then, accepts connections again afterwards."""
        ok = self.psql(f'ALTER DATABASE "{live}" WITH ALLOW_CONNECTIONS false',
                       f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{live}' "  # noqa: S608
                       "AND pid <> pg_backend_pid()")  # `live`: the app's own database name, from its settings
        for _ in range(20):  # pg_terminate_backend returns before the sessions end: the rename waits (10 s at most)
            if not ok or self.db.sh(f'psql -XAt -d postgres -c "{connections_sql(live)}"').out.strip() == "0":
                break
            self.fx.sleep(0.5)
        if ok:
            r = self.fx.run(*self.db.argv('PGOPTIONS=--client-min-messages=warning psql -X -v ON_ERROR_STOP=1 -q -d '
                                          'postgres --single-transaction "$@"',
                                          *[a for s in swap_sql(live, into, out) for a in ("-c", s)]))
            if not r.ok:
                self.fx.say(r.err.strip())
            ok = r.ok
        return self.psql(f'ALTER DATABASE "{live}" WITH ALLOW_CONNECTIONS true') and ok

    def resume(self, why: str, on: str) -> None:
        """After a failure once the app stopped: the app started again on `on` (what it reads now) and waited for;
        ends the restore with `why` and that outcome."""
        if not self.stopped:
            raise RestoreFailed(why)
        self.say(f"starting the app again on {on}")
        if self.compose("start", "app") and wait_healthy(self.fx, self.health_timeout, "restore"):
            raise RestoreFailed(f"{why}; the app serves {on}")
        raise RestoreFailed(f"{why}; the app was started again on {on} but did not become ready (above)")


def media_remote(app_dir: Path) -> str:
    """The bucket the app's media live in (media_bucket), as an rclone remote, or "" (then they are in the app's
    Docker volume)."""
    return conf.value(app_dir.name, "VPSKIT_MEDIA_REMOTE")
