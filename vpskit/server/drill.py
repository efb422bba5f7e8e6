"""The restore drill (tasks/restore.py --data drill=true and the drill timer): a backup (latest or a name, here or
offsite) restored into a scratch database beside the live one and its media into a scratch folder; the rows of
every table compared with the counts its manifest recorded and every media file with its checksum; the scratch
copies removed. Nothing live is touched: not the database, not the media volume, not the app."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from .backups import NAME
from .database import Database
from .docker import Docker
from .effects import Effects
from .locks import BACKUPS, Lock


class DrillFailed(Exception):
    """The drill ends here with this one line."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bad_checksums(folder: Path, sums: Path) -> list[str]:
    """The files a `sha256sum` list names that are missing or differ (paths relative to `folder`)."""
    bad = []
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if not name:
            continue
        path = folder / name
        if not path.is_file() or sha256(path) != digest:
            bad.append(name)
    return bad


# A table as pg_dump's COPY lines name it (schema.table, each part quoted where it must be): nothing else is ever
# counted in the scratch database.
TABLE = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")(?:\.(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+"))?$')


def recorded_rows(manifest_text: str) -> dict[str, int]:
    """The rows per table a backup's manifest recorded ({} for a backup taken by an older vpskit); a name that is
    not a table's is refused."""
    try:
        tables = json.loads(manifest_text).get("tables") or {}
    except ValueError:
        return {}
    odd = [t for t in tables if not TABLE.match(str(t))]
    if odd:
        raise DrillFailed(f"the manifest names something that is not a table ({odd[0][:60]!r}): not counted")
    return {str(t): int(n) for t, n in tables.items()}


def row_mismatches(recorded: dict[str, int], restored: list[int]) -> list[tuple[str, int, int]]:
    """(table, restored, recorded) for each table whose count differs, in the manifest's order."""
    return [(t, got, want) for (t, want), got in zip(recorded.items(), restored, strict=False) if got != want]


def mb(size: int) -> int:
    """A scratch copy's room in MB: its size and a fifth more."""
    return int(size * 1.2 / 1048576 + 1)


@dataclass(frozen=True)
class Room:
    need: int  # MB
    free: int  # MB
    where: str

    @property
    def enough(self) -> bool:
        return self.free >= self.need


def room(live_db: int, media: int, data_dir: str, root: str, same_disk: bool, data_free: int,
         root_free: int) -> Room:
    """The disk scratch copies need: the database's copy where Docker keeps its data, `media` bytes beside the
    backups (the drill's media unpacked, the upgrade's dump); both together when they share a disk."""
    if same_disk:
        return Room(mb(live_db) + mb(media), root_free, f"{root} and {data_dir} (one disk)")
    if data_free < mb(live_db):
        return Room(mb(live_db), data_free, data_dir)
    return Room(mb(media), root_free, root)


def database_size(db: Database) -> int:
    """The live database's size in bytes (0 when it cannot be read)."""
    live = db.sh('psql -XAt -c "select pg_database_size(current_database())"').out.strip()
    return int(live) if live.isdigit() else 0


def disk_room(fx: Effects, root: Path, db_bytes: int, beside: int) -> Room:
    """The room a copy of the database needs where Docker keeps its volumes, and `beside` bytes in `root`."""
    data_dir = fx.run("docker", "info", "-f", "{{.DockerRootDir}}").out.strip() or "/var/lib/docker"
    exists = os.path.exists(data_dir)
    same = os.stat(data_dir).st_dev == os.stat(root).st_dev if exists else True
    return room(db_bytes, beside, data_dir, str(root), same, free_mb(data_dir) if exists else 0, free_mb(str(root)))


def free_mb(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // 1048576


class Scratch:
    """A scratch database to restore a backup into: beside the live one in the db service, or, for an external
    database, in a throwaway postgres here without a network (a managed database's user may not create
    databases, and the live server is left alone)."""

    def __init__(self, fx: Effects, db: Database, app: str):
        self.fx, self.db, self.box = fx, db, f"vpskit-drill-{app}"
        self.external = db.external()
        self.name = "drill"

    def start(self) -> None:
        if self.external:
            self.remove()
            # The image wants a superuser password; this one goes with the container (no network either), and is
            # passed through the environment, never on a command line.
            made = self.fx.run("docker", "run", "-d", "--name", self.box, "--network", "none", "-e",
                               "POSTGRES_PASSWORD", self.db.image(),
                               env={**os.environ, "POSTGRES_PASSWORD": secrets.token_urlsafe(18)})
            if not made.ok:
                raise DrillFailed(f"could not start a scratch postgres for the drill: {made.err.strip()}")
            for _ in range(60):  # ready on TCP: the image's first-start setup answers on the socket before
                if self.fx.run("docker", "exec", self.box, "pg_isready", "-q", "-h", "127.0.0.1").ok:
                    return
                self.fx.sleep(1)
            raise DrillFailed("the drill's scratch postgres did not start within 60s")
        if not Docker(self.fx).ids("db", all_=False):
            raise DrillFailed("the db service is not running: start the stack first")
        live = self.db.sh('printf %s "$PGDATABASE"').out.strip()
        self.name = f"{live}_drill"
        self.drop()

    def psql(self, database: str, sql: str, quiet: bool = True):
        """SQL on stdin to psql in `database` (tuples only, unaligned)."""
        flags = ["-X", "-v", "ON_ERROR_STOP=1", "-t", "-A", *(["-q"] if quiet else []), "-d", database]
        if self.external:
            return self.fx.run("docker", "exec", "-i", "-u", "postgres", self.box, "psql", "-U", "postgres", *flags,
                               input=sql)
        return self.fx.run(*self.db.argv('psql "$@"', *flags), input=sql)

    def restore(self, dump: Path):
        if self.external:
            return self.fx.run("docker", "exec", "-i", "-u", "postgres", self.box, "pg_restore", "-U", "postgres",
                               "-d", self.name, "--no-owner", "--no-privileges", "--exit-on-error", stdin=dump)
        return self.fx.run(*self.db.restore_into(self.name), stdin=dump)

    def drop(self) -> None:
        if not self.external:
            self.psql("postgres", f'DROP DATABASE IF EXISTS "{self.name}";')

    def remove(self) -> None:
        if self.external:
            self.fx.run("docker", "rm", "-f", "-v", self.box)
        else:
            self.drop()


class Drill:
    def __init__(self, app_dir: Path, root: Path, which: str, source: str, fx: Effects, bin_dir: Path,
                 lock_wait: int = 300):
        self.app_dir, self.root, self.which, self.source = app_dir, root, which, source
        self.fx, self.bin, self.lock_wait = fx, bin_dir, lock_wait
        self.db = Database(Docker(fx), app_dir)
        self.work = root / ".drill"

    def say(self, text: str) -> None:
        self.fx.say(f"vpskit drill: {text}")

    def run(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = Lock(self.root / ".lock", self.fx)
        if lock.take(self.lock_wait, "restore drill", BACKUPS):
            self.say(f"FAILED: a backup or restore held {self.root}/.lock for {self.lock_wait}s: run the drill "
                     "again when it ends")
            return 1
        scratch = Scratch(self.fx, self.db, self.app_dir.name)
        try:
            shutil.rmtree(self.work, ignore_errors=True)
            scratch.start()
            self.work.mkdir(mode=0o700)
            self.drill(scratch)
            return 0
        except DrillFailed as failed:
            self.say(f"FAILED: {failed}")
            return 1
        finally:
            scratch.remove()
            shutil.rmtree(self.work, ignore_errors=True)
            lock.release()

    def source_folder(self) -> tuple[str, Path, str]:
        """(backup name, its folder, where it came from for what is said)."""
        if self.source == "offsite":
            from .offsite import Offsite, OffsiteFailed

            try:
                name, snapshot = Offsite(self.app_dir.name).fetch(self.which, self.work / "backup")
            except OffsiteFailed as failed:
                self.fx.say(f"vpskit offsite: {failed}")
                raise DrillFailed(f"the offsite backup {self.which} could not be fetched (above)") from failed
            return name, self.work / "backup", f" (offsite snapshot {snapshot})"
        name = self.which
        if name == "latest":
            names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name))
            if not names:
                raise DrillFailed(f"no backup in {self.root} to drill: take one with tasks/backup.py")
            name = names[-1]
        src = self.root / name
        if not src.is_dir():
            raise DrillFailed(f"no backup {name} in {self.root}")
        if bad_checksums(src, src / "SHA256SUMS"):
            raise DrillFailed(f"backup {name} is corrupt (checksum mismatch)")
        return name, src, ""

    def drill(self, scratch: Scratch) -> None:
        start = self.fx.clock()
        name, src, where = self.source_folder()
        need = disk_room(self.fx, self.root, database_size(self.db), (src / "media.tar").stat().st_size)
        if not need.enough:
            raise DrillFailed(
                f"not enough disk space for the drill: {need.free} MB free in {need.where}, its scratch copies need "
                f"about {need.need} MB (the database's size and the media's, and a fifth more); nothing was restored; "
                "free space (older backups, docker image prune) or set drill_schedule = \"\" until the disk is "
                "bigger")
        self.say(f"restoring backup {name}{where} into the scratch database {scratch.name}")
        recorded = recorded_rows((src / "manifest.json").read_text())
        if not recorded:
            raise DrillFailed(f"backup {name} records no row counts (taken by an older vpskit): take a new backup, "
                              "then drill")
        made = scratch.psql("postgres", f'CREATE DATABASE "{scratch.name}";')
        if not made.ok:
            raise DrillFailed(f"could not create the scratch database {scratch.name}: {made.err.strip()}")
        restored = scratch.restore(src / "db.dump")
        if not restored.ok:
            for line in restored.err.strip().splitlines()[-10:]:
                self.fx.say(line)
            raise DrillFailed(f"backup {name} does not restore: pg_restore into a scratch database failed (above)")
        sql = "".join(f"SELECT count(*) FROM {t};\n" for t in recorded)  # noqa: S608 - names checked (TABLE)
        counted = scratch.psql(scratch.name, sql)
        if not counted.ok:
            raise DrillFailed(f"counting rows failed: {(counted.err.strip().splitlines() or ['?'])[0]}")
        counts = [int(x) for x in counted.out.split()]
        differ = row_mismatches(recorded, counts)
        if differ:
            table, got, want = differ[0]
            raise DrillFailed(f"backup {name}: table {table} has {got} rows restored, its manifest recorded {want} "
                              f"(differing: {', '.join(t for t, _, _ in differ)})")
        media = self.work / "media"
        media.mkdir()
        if not self.fx.run("tar", "-C", str(media), "-xf", str(src / "media.tar")).ok:
            raise DrillFailed(f"backup {name}: the media archive does not unpack")
        sums = src / "media.sha256"
        files = len([x for x in sums.read_text().splitlines() if x.strip()])
        bad = bad_checksums(media, sums)
        if bad:
            raise DrillFailed(f"backup {name}: {len(bad)} of {files} media files do not match their checksums")
        self.say(f"passed in {int(self.fx.clock() - start)}s: backup {name}{where} restores; {len(recorded)} tables, "
                 f"{sum(recorded.values())} rows as its manifest recorded; {files} media files match their checksums")
