"""A PostgreSQL major upgrade of the app's own database (tasks/upgrade_postgres.py), as a transaction.

Under the app's lock and the backups' lock: a verified backup first; the site closed (the proxy's maintenance page)
and the app stopped; a dump of the old major (roles and passwords with pg_dumpall --globals-only, the database with
pg_dump); a server of the new major initialised in a volume of its own, the dump restored into it and every table's
rows compared with the dump's; only then the switch: the old data moved aside into `<project>_db-data-<old major>`
(kept: `rollback=true` returns to it, `drop_old=true` removes it), the new data in the database's volume, the db
service on the new image, the app started and waited for, the site opened. Any failure before the switch leaves
the old database serving, untouched; a failure after it puts the old data and image back.

The data directories are swapped by renaming them where Docker keeps the volumes (the local driver): instant,
whatever the database's size, and the compose file keeps naming the same volume.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .backup import copy_rows, human_size
from .database import Database, data_mount, env_value, major, major_key
from .docker import Docker
from .drill import TABLE, database_size, disk_room, row_mismatches
from .effects import Effects
from .locks import app_and_backups
from .proxy import Proxy, close_for, set_maintenance
from .stack import wait_healthy

MANAGED = "the database is external (DATABASE_URL): its provider upgrades it; nothing was changed"
ELSEWHERE = "PostgreSQL upgrade on the db server"  # what app servers say they are closed for meanwhile
VOLUME = "db-data"  # the database's volume in templates/docker-compose.yml (vpskit/pgmajor.py says the same)
# A db server's PostgreSQL closed to its network clients (the app servers) for the upgrade: a first line of
# pg_hba.conf that rejects every TCP connection, its own file kept beside it to put back (a left-over copy from an
# interrupted run is the original, so it is not copied over), and the sessions over the network ended.
HBA_FILE = 'f=$(psql -XAt -d postgres -c "show hba_file") && '
HBA_RELOAD = ' && psql -XAtq -d postgres -c "select pg_reload_conf()" >/dev/null'
HBA_CLOSE = (HBA_FILE + '{ [ -f "$f.vpskit-open" ] || cp -p "$f" "$f.vpskit-open"; } && '  # noqa: S608 - constant
             '{ echo "host all all all reject"; cat "$f.vpskit-open"; } > "$f"' + HBA_RELOAD +
             ' && psql -XAtq -d postgres -c "select count(pg_terminate_backend(pid)) from pg_stat_activity '
             'where client_addr is not null" >/dev/null')
HBA_OPEN = HBA_FILE + '{ [ ! -f "$f.vpskit-open" ] || { cat "$f.vpskit-open" > "$f" && rm "$f.vpskit-open"; }; }'


class UpgradeFailed(Exception):
    """The upgrade ends here with this one line (what serves now is in it)."""


@dataclass(frozen=True)
class Upgraded:
    """What a finished upgrade keeps beside the app (db-upgrade.json), for rollback=true and drop_old=true."""

    from_image: str
    from_major: str
    to_image: str
    to_major: str
    at: str

    def aside(self, project: str) -> str:
        return f"{project}_{VOLUME}-{self.from_major}"


def refusal(data: str, target: str, image: str) -> str:
    """Why an upgrade from the data's major to the image's cannot start ("" when it can)."""
    if not data:
        return "the database's volume has no PostgreSQL data (PG_VERSION) yet: deploy first"
    if not target:
        return f"cannot tell which PostgreSQL major {image} runs (its `postgres --version`): check the image"
    if major_key(target) < major_key(data):
        return (f"{image} is PostgreSQL {target}, older than the data's {data}: a major upgrade only goes forward "
                "(rollback=true returns to the data kept by the last upgrade)")
    return ""


def with_db_image(compose: str, image: str, major_: str) -> str:
    """The compose file with its db service's image replaced (the service as templates/docker-compose.yml writes
    it: `  db:` then `    image: ...`), and its volume where that major's image wants it (database.data_mount)."""
    text, n = re.subn(r"(?m)^(  db:\n    image: ).*$", lambda m: m.group(1) + image, compose, count=1)
    text, mounts = re.subn(r"(?m)^(      - db-data:)\S+$", lambda v: v.group(1) + data_mount(major_), text, count=1)
    if n != 1 or mounts != 1:
        raise UpgradeFailed("the compose file has no db service image or volume to change: nothing was changed")
    return text


def db_image(compose: str) -> str:
    found = re.search(r"(?m)^  db:\n    image: (\S+)", compose)
    return found.group(1) if found else ""


def globals_for_new(dumped: str, bootstrap: str) -> str:
    """pg_dumpall --globals-only of the old server, for the new one: the bootstrap role's CREATE ROLE left out (the
    new server's entrypoint made it; its ALTER ROLE, with the password verifier, stays)."""
    names = {f"CREATE ROLE {bootstrap};", f'CREATE ROLE "{bootstrap}";'}
    return "".join(line for line in dumped.splitlines(keepends=True) if line.strip() not in names)


def server_major(version_line: str) -> str:
    """The major of `postgres --version` output ("postgres (PostgreSQL) 17.6 (Debian 17.6-1)" -> "17")."""
    found = re.search(r"\)\s*(\d[\d.]*)", version_line)
    return major(found.group(1)) if found else ""


class Upgrade:
    def __init__(self, app_dir: Path, root: Path, image: str, fx: Effects, bin_dir: Path, lock_wait: int = 300,
                 health_timeout: int = 180):
        self.app_dir, self.root, self.image, self.fx, self.bin = app_dir, root, image, fx, bin_dir
        self.lock_wait, self.health_timeout = lock_wait, health_timeout
        self.d = Docker(fx)
        self.db = Database(self.d, app_dir)
        self.proxy = Proxy(fx)
        self.work = root / ".pg-upgrade"
        self.project = app_dir.name
        self.temp = f"{self.project}-db-upgrade"
        self.closed_site = self.stopped = self.temp_made = self.blocked = False
        self.rows_said = ""

    def say(self, text: str) -> None:
        self.fx.say(f"vpskit upgrade: {text}")

    @property
    def state_file(self) -> Path:
        return self.app_dir / "db-upgrade.json"

    def volume(self, suffix: str = "") -> str:
        return f"{self.project}_{VOLUME}{suffix}"

    def mountpoint(self, volume: str) -> Path | None:
        r = self.fx.run("docker", "volume", "inspect", "-f", "{{.Mountpoint}}", volume)
        return Path(r.out.strip()) if r.ok and r.out.strip() else None

    def data_major(self) -> str:
        mp = self.mountpoint(self.volume())
        if mp is None:
            return ""
        for f in (mp / "PG_VERSION", *sorted(mp.glob("*/docker/PG_VERSION"))):
            if f.exists():
                return major(f.read_text())
        return ""

    def locked(self, what) -> int:
        with app_and_backups(self.app_dir, self.root, self.fx, self.lock_wait,
                             what.__doc__.split("\n", 1)[0]) as refusal:
            try:
                if refusal:
                    raise UpgradeFailed(refusal)
                what()
                return 0
            except UpgradeFailed as failed:
                self.say(str(failed))
                return 1
            finally:
                self.cleanup()

    # --- the upgrade
    def run(self) -> int:
        return self.locked(self.upgrade)

    def upgrade(self) -> None:
        """PostgreSQL major upgrade"""
        if self.db.external():
            raise UpgradeFailed(MANAGED)
        data = self.data_major()
        version = self.fx.run("docker", "run", "--rm", "--network", "none", "--entrypoint", "postgres", self.image,
                              "--version")
        target = server_major(version.out)
        if why := refusal(data, target, self.image):
            raise UpgradeFailed(f"{why}; nothing was changed")
        if target == data:
            self.say(f"the database is PostgreSQL {data} already, as {self.image} runs: nothing to do")
            return
        aside = self.volume(f"-{data}")
        if self.mountpoint(aside) is not None:
            raise UpgradeFailed(f"the volume {aside} (kept by an earlier upgrade) is still there: drop it first with "
                                "--data drop_old=true; nothing was changed")
        compose_file = self.app_dir / "docker-compose.yml"
        compose = compose_file.read_text()
        old_image = db_image(compose)
        with_db_image(compose, self.image, target)  # refuses a compose file it cannot change, before any change

        self.say(f"from PostgreSQL {data} ({old_image}) to {target} ({self.image}); a backup first")
        made = self.fx.run(str(self.bin / "vpskit-server"), "backup", "--app-dir", str(self.app_dir), "--backups",
                           str(self.root), "--keep", "none", stderr_shown=True,
                           env={**os.environ, "VPSKIT_BACKUP_LOCKED": "1"})
        if not made.ok or not made.out.strip():
            raise UpgradeFailed("the backup failed (above): nothing was changed")
        backup = made.out.strip().splitlines()[-1]
        self.say(f"backup {backup} taken")
        size = database_size(self.db)
        need = disk_room(self.fx, self.root, size, size)  # the dump (at most the database's size) and the copy
        if not need.enough:
            raise UpgradeFailed(f"not enough disk space for the upgrade: {need.free} MB free in {need.where}, its dump "
                                f"and the new major's copy of the database need about {need.need} MB; nothing was "
                                f"changed (backup {backup} was taken); free space (older backups, docker image "
                                "prune) and run it again")

        has_app = "app" in self.d.services()
        closed_at = self.fx.clock()
        if has_app:
            self.close_site()
            self.d.compose("stop", "app")
            self.stopped = True
        else:  # a db server: the app servers' sessions end, and no new one starts until the switch
            self.blocked = True  # whatever the script did, putting the rules back is safe (see cleanup)
            if not self.network_closed(True):
                self.back("the database could not be closed to the app servers (above)")
        self.prepare(data, target)
        self.switch(old_image, data, target)
        seconds = int(self.fx.clock() - closed_at)
        at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.state_file.write_text(json.dumps(asdict(Upgraded(old_image, data, self.image, target, at)), indent=2)
                                   + "\n")
        self.say(f"done: PostgreSQL {target} serves {self.rows_said}; the site was closed for {seconds}s")
        self.say(f"the PostgreSQL {data} data is kept as the volume {aside}: to go back to it (losing what was "
                 "written since), tasks/upgrade_postgres.py --data rollback=true; to free its space, --data "
                 f"drop_old=true; the backup from before is {backup}")

    def close_site(self) -> None:
        self.closed_site = close_for(self.app_dir, self.fx, self.proxy, "upgrade")

    def prepare(self, data: str, target: str) -> None:
        """The dump of the old major restored into a new server of the target major, rows compared: the old
        database is untouched whatever fails here."""
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(mode=0o700, parents=True)
        roles, dump = self.work / "globals.sql", self.work / "db.dump"
        self.say(f"dumping the PostgreSQL {data} database")
        if not self.fx.run(*self.db.argv("pg_dumpall --globals-only"), out=roles).ok:
            self.back("dumping the roles failed (above)")
        if not self.fx.run(*self.db.argv("pg_dump -Fc"), out=dump).ok:
            self.back("dumping the database failed (above)")
        code, rows = self.fx.pipe(self.db.argv("pg_restore --data-only -f -"), dump, copy_rows)
        if code != 0 or any(not TABLE.match(t) for t in rows):
            self.back("reading the dump's rows failed (above)")
        env = self.db.env()
        user, db = env_value(env, "POSTGRES_USER"), env_value(env, "POSTGRES_DB")
        self.say(f"initialising PostgreSQL {target} in the volume {self.volume('-next')} and restoring the dump "
                 f"({human_size(dump.stat().st_size)})")
        self.fx.run("docker", "rm", "-f", "-v", self.temp)
        self.fx.run("docker", "volume", "rm", self.volume("-next"))
        started = self.fx.run("docker", "run", "-d", "--name", self.temp, "--network", "none", "-v",
                              f"{self.volume('-next')}:{data_mount(target)}", "-e", "POSTGRES_USER", "-e",
                              "POSTGRES_PASSWORD", "-e", "POSTGRES_DB", self.image,
                              env={**os.environ, "POSTGRES_USER": user, "POSTGRES_DB": db,
                                   "POSTGRES_PASSWORD": env_value(env, "POSTGRES_PASSWORD")})
        self.temp_made = True
        if not started.ok:
            self.back(f"the PostgreSQL {target} server did not start: {started.err.strip()}")
        for _ in range(90):
            if self.fx.run("docker", "exec", self.temp, "pg_isready", "-q", "-h", "127.0.0.1", "-U", user).ok:
                break
            self.fx.sleep(1)
        else:
            self.fx.run("docker", "logs", "--tail", "20", self.temp, show=True)
            self.back(f"the PostgreSQL {target} server did not become ready within 90s (its log above)")
        (self.work / "globals-new.sql").write_text(globals_for_new(roles.read_text(), user))
        steps = (("the roles", ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", "postgres"],
                  self.work / "globals-new.sql"),
                 ("the database", ["pg_restore", "-U", user, "-d", db, "--exit-on-error"], dump))
        for what, cmd, source in steps:
            r = self.fx.run("docker", "exec", "-i", self.temp, *cmd, stdin=source)
            if not r.ok:
                self.fx.say(r.err.strip())
                self.back(f"restoring {what} into PostgreSQL {target} failed (above)")
        sql = "".join(f"SELECT count(*) FROM {t};\n" for t in rows)  # noqa: S608 - names checked (TABLE)
        counted = self.fx.run("docker", "exec", "-i", self.temp, "psql", "-XAt", "-U", user, "-d", db, input=sql)
        differ = row_mismatches(rows, [int(x) for x in counted.out.split()]) if counted.ok else [("?", 0, 0)]
        if differ or len(counted.out.split()) != len(rows):
            table, got, want = differ[0] if differ else ("?", 0, 0)
            self.back(f"the restored copy differs from the dump: table {table} has {got} rows, the dump {want}")
        self.rows_said = f"{len(rows)} tables, {sum(rows.values())} rows, as the dump had"
        self.say(f"restored and compared: {self.rows_said}")
        if not self.fx.run("docker", "stop", "-t", "60", self.temp).ok:
            self.back(f"the PostgreSQL {target} server did not stop cleanly")
        self.fx.run("docker", "rm", self.temp)
        self.temp_made = False

    def network_closed(self, closed: bool, reload: bool = True) -> bool:
        """The database server closed to its network clients (its access rules' first line rejects them, the app
        servers' sessions end), or open again; the dump and the restore here use its local socket."""
        script = HBA_CLOSE if closed else HBA_OPEN + (HBA_RELOAD if reload else "")
        return self.fx.run(*self.db.argv(script)).ok

    def back(self, why: str) -> None:
        """A failure before the switch: the old database was not touched; the app starts again on it."""
        if self.blocked:
            self.blocked = not self.network_closed(False)
        if self.stopped:
            self.say("starting the app again on the old database")
            ok = self.d.compose("start", "app").ok and wait_healthy(self.fx, self.health_timeout, "upgrade")
            self.stopped = False
            if not ok:
                raise UpgradeFailed(f"{why}: the old database is unchanged, but the app did not become ready again "
                                    "(above)")
        raise UpgradeFailed(f"{why}: the old database is unchanged and serves the app")

    def swap(self, current_to: str, into_current: str) -> None:
        """The data in the database's volume moved into volume `current_to` (made here), and volume
        `into_current`'s data into the database's volume (that volume then goes): renames, instant."""
        self.fx.run("docker", "volume", "create", current_to)
        live, aside, incoming = (self.mountpoint(v) for v in (self.volume(), current_to, into_current))
        if live is None or aside is None or incoming is None:
            raise OSError("a volume's folder cannot be found")
        aside.rmdir()
        live.rename(aside)
        incoming.rename(live)
        incoming.mkdir()
        self.fx.run("docker", "volume", "rm", into_current)

    def switch(self, old_image: str, data: str, target: str) -> None:
        compose_file = self.app_dir / "docker-compose.yml"
        compose = compose_file.read_text()
        self.say(f"switching the database to PostgreSQL {target}")
        if self.blocked:  # the old data's own rules back in its folder (kept, for a rollback) before it stops
            if not self.network_closed(False, reload=False):
                self.back("putting the database's access rules back failed (above)")
            self.blocked = False  # the rejecting rule lives on in the running server only, until it stops now
        self.d.compose("stop", "db")
        try:
            self.swap(self.volume(f"-{data}"), self.volume("-next"))
        except OSError as err:
            self.d.up("db")
            self.back(f"moving the data folders failed ({err})")
        compose_file.write_text(with_db_image(compose, self.image, target))
        if self.d.up("db", *(["app"] if self.stopped else [])) and wait_healthy(self.fx, self.health_timeout,
                                                                                "upgrade"):
            self.stopped = False
            return
        self.say(f"PostgreSQL {target} with the app did not become healthy: putting PostgreSQL {data} back")
        self.d.compose("stop", *(["app"] if self.stopped else []), "db")
        self.swap(self.volume(f"-{target}-failed"), self.volume(f"-{data}"))
        compose_file.write_text(compose)
        if self.d.up("db", *(["app"] if self.stopped else [])) and wait_healthy(self.fx, self.health_timeout,
                                                                                "upgrade"):
            self.stopped = False
            failed = self.volume(f"-{target}-failed")
            raise UpgradeFailed(f"the app did not become ready on PostgreSQL {target} (above): PostgreSQL {data} "
                                f"serves again, as before; the {target} copy is kept as {failed}")
        raise UpgradeFailed(f"the app did not become ready on PostgreSQL {target}, nor again on {data} (above)")

    # --- rollback=true, drop_old=true
    def kept(self) -> Upgraded:
        if not self.state_file.exists():
            raise UpgradeFailed("no PostgreSQL upgrade of this app to go back from (or its old data was "
                                "dropped): nothing was changed")
        state = Upgraded(**json.loads(self.state_file.read_text()))
        if self.mountpoint(state.aside(self.project)) is None:
            raise UpgradeFailed(f"the PostgreSQL {state.from_major} data ({state.aside(self.project)}) is gone: "
                                "restore a backup instead; nothing was changed")
        return state

    def rollback(self) -> int:
        return self.locked(self.go_back)

    def go_back(self) -> None:
        """PostgreSQL rollback to the data an upgrade kept"""
        state = self.kept()
        compose_file = self.app_dir / "docker-compose.yml"
        compose = compose_file.read_text()
        self.say(f"back to PostgreSQL {state.from_major} ({state.from_image}): what was written since the upgrade at "
                 f"{state.at} is not in that data")
        newer = self.volume(f"-{state.to_major}")
        if self.mountpoint(newer) is not None:
            raise UpgradeFailed(f"the volume {newer} (kept by an earlier rollback) is still there: remove it first "
                                f"(sudo docker volume rm {newer}); nothing was changed")
        has_app = "app" in self.d.services()
        if has_app:
            self.close_site()
        self.d.compose("stop", *(["app"] if has_app else []), "db")
        self.swap(newer, state.aside(self.project))
        compose_file.write_text(with_db_image(compose, state.from_image, state.from_major))
        ok = self.d.up("db", *(["app"] if has_app else [])) and wait_healthy(self.fx, self.health_timeout, "upgrade")
        self.state_file.unlink()
        if not ok:
            raise UpgradeFailed(f"PostgreSQL {state.from_major} did not become healthy again (above); the "
                                f"{state.to_major} data is kept as {newer}")
        self.say(f"PostgreSQL {state.from_major} serves again; the {state.to_major} data is kept as the volume "
                 f"{newer} (sudo docker volume rm {newer} frees it); set postgres_image = \"{state.from_image}\" "
                 "before the next deploy")

    def drop_old(self) -> int:
        return self.locked(self.drop)

    def drop(self) -> None:
        """PostgreSQL upgrade's old data dropped"""
        state = self.kept()
        aside = state.aside(self.project)
        mp = self.mountpoint(aside)
        size = sum(f.stat().st_size for f in mp.rglob("*") if f.is_file()) if mp else 0
        if not self.fx.run("docker", "volume", "rm", aside).ok:
            raise UpgradeFailed(f"the volume {aside} could not be removed (in use?): nothing was changed")
        self.state_file.unlink()
        self.say(f"removed the PostgreSQL {state.from_major} data ({aside}, {human_size(size)}): rollback=true is no "
                 "longer possible")

    def cleanup(self) -> None:
        if self.blocked:
            self.network_closed(False)
        if self.temp_made:
            self.fx.run("docker", "rm", "-f", self.temp)
            self.fx.run("docker", "volume", "rm", self.volume("-next"))
        shutil.rmtree(self.work, ignore_errors=True)
        if self.closed_site:
            set_maintenance(self.app_dir, False, self.fx, self.proxy)
            self.closed_site = False
