"""A backup of one app (tasks/backup.py, the daily timer, a deploy's pre-update backup, a restore's safety copy).

The database as a pg_dump custom-format archive streamed from the db container (or, for an external database, a
client container here) to disk, never held in memory; the media (the app's volume, or its bucket when
media_bucket is set) as a tar; each media file's checksum; a SHA256SUMS sidecar and a manifest (with the rows of
every table the dump holds, for the drill). Written under a .partial name, fsynced, checked with
pg_restore --list, then renamed: a folder without .partial is a complete, verified backup. Retention runs only
after a successful backup and never removes the newest one; then, with backup_offsite, the copy offsite
(vpskit/server/offsite.py), whose failure fails the backup (the local copy stays). Under the backups' lock, waited for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

from . import conf
from .backups import NAME, gfs_keep
from .database import Database
from .docker import Docker
from .effects import Effects
from .locks import BACKUPS, Lock


class BackupFailed(Exception):
    """The backup ends here with this one line; nothing of it is kept."""


def copy_rows(lines: Iterable[str]) -> dict[str, int]:
    """Rows per table in `pg_restore --data-only -f -` output: one line per row in each COPY block."""
    rows: dict[str, int] = {}
    table = None
    for line in lines:
        line = line.rstrip("\n")
        if table is None:
            if line.startswith("COPY "):
                table = line.split()[1]
                rows[table] = 0
        elif line == "\\.":
            table = None
        else:
            rows[table] += 1
    return rows


def media_sums(archive: Path) -> str:
    """`sha256sum`-style lines for each regular file in a tar, named as the archive names them (./path)."""
    out = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                h = hashlib.sha256()
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
                out.append(f"{h.hexdigest()}  {member.name}\n")
    return "".join(out)


def human_size(n: int) -> str:
    return f"{(n + 1023) // 1024} kB" if n < 1048576 else f"{n / 1048576:.1f} MB"


def room_needed_mb(last_manifest: str) -> int:
    """What the next backup needs: the last one's size and a fifth more (0 when unknown)."""
    try:
        m = json.loads(last_manifest)
        size = int(m.get("db_dump_bytes", 0)) + int(m.get("media_tar_bytes", 0))
    except (ValueError, TypeError, AttributeError):
        return 0
    return int(size * 1.2 / 1048576 + 1)


def free_mb(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // 1048576


def rclone(app: str, *args: str) -> tuple[list[str], dict]:
    """rclone with the bucket's remote settings and keys from the app's root-only configuration, in its own
    environment only: they reach no other command, and no command line."""
    env = {**os.environ, **conf.read(app)}
    return ["rclone", "--config", "/dev/null", "--retries", "3", "--low-level-retries", "5", "--contimeout", "15s",
            *args], env


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Backup:
    def __init__(self, app_dir: Path, root: Path, keep: tuple[int, int, int] | None, lock_wait: int, fx: Effects,
                 bin_dir: Path, now: str = "", locked: bool = False, offsite_soft: bool = False,
                 stamp: Callable[[], str] = lambda: dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")):
        self.app_dir, self.root, self.keep, self.lock_wait = app_dir, root, keep, lock_wait
        self.fx, self.bin, self.locked, self.soft = fx, bin_dir, locked, offsite_soft
        self.given, self.stamp = now, stamp
        self.now = now  # named once the lock is held (name_it)
        self.d = Docker(fx)
        self.db = Database(self.d, app_dir)

    def say(self, text: str) -> None:
        self.fx.say(f"vpskit backup: {text}")

    def run(self) -> int:
        """Prints the backup's name on stdout once it is complete (and copied offsite, when that is set)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        lock = Lock(self.root / ".lock", self.fx)
        if not self.locked and lock.take(self.lock_wait, "backup", BACKUPS):
            self.say(f"another backup or restore is running (lock {self.root}/.lock): try again when it ends (waited "
                     f"{self.lock_wait}s)")
            return 1
        self.name_it()
        work = self.root / f"{self.now}.partial"
        try:
            self.backup(work)
            if self.keep is not None:
                self.retention()
                if not self.offsite():
                    return 1
            print(self.now, flush=True)
            return 0
        except BackupFailed as failed:
            self.say(str(failed))
            return 1
        finally:
            shutil.rmtree(work, ignore_errors=True)  # whatever ends it before the rename takes the partial folder
            lock.release()

    def name_it(self) -> None:
        """The backup's name is the time it begins, read once the lock is held: a backup that waited for another
        is named after it, and two in the same second (a deploy's pre-update backup right after another one)
        are a second apart rather than one refused as existing already. A name given (VPSKIT_BACKUP_TIME) stays."""
        if self.given:
            return
        self.now = self.stamp()
        for _ in range(3):
            if not (self.root / self.now).exists():
                return
            self.fx.sleep(1)
            self.now = self.stamp()

    def failed_writing(self, what: str) -> BackupFailed:
        """One line with the cause (a full disk named as such)."""
        free = free_mb(self.root)
        if free < 2:
            return BackupFailed(f"the disk filled up while writing {what} ({free} MB free in {self.root}): free space "
                                "(older backups, docker image prune) or set backup_root to a bigger disk; nothing kept")
        return BackupFailed(f"writing {what} failed (above): nothing kept")

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name))

    def backup(self, work: Path) -> None:
        external = self.db.external()
        if not external and not self.d.ids("db", all_=False):
            raise BackupFailed("the db service is not running: start the stack (pyinfra inventory.py deploy.py)")
        m = re.search(r"^name: *(\S+)", (self.app_dir / "docker-compose.yml").read_text(), re.M)
        project = m.group(1) if m else self.app_dir.name
        for partial in self.root.glob("*.partial"):  # left by an interrupted backup; never counted as a backup
            shutil.rmtree(partial, ignore_errors=True)
        dest = self.root / self.now
        if dest.exists():
            raise BackupFailed(f"backup {self.now} exists already")
        names = self.names()
        if names and (self.root / names[-1] / "manifest.json").exists():
            need = room_needed_mb((self.root / names[-1] / "manifest.json").read_text())
            if free_mb(self.root) < need:
                raise BackupFailed(f"not enough disk space for a backup: {free_mb(self.root)} MB free in {self.root}, "
                                   f"the last backup ({names[-1]}) needed about {need * 5 // 6} MB; free space (older "
                                   "backups, docker image prune) or set backup_root to a bigger disk")
        work.mkdir(mode=0o700)
        start = self.fx.clock()
        where = self.db.where()
        if not self.fx.run(*self.db.argv("pg_dump -Fc"), out=work / "db.dump").ok:
            raise self.failed_writing(f"the database dump of {where}")
        if not self.fx.run(*self.db.argv("pg_restore --list"), stdin=work / "db.dump").ok:
            raise BackupFailed("the dump did not pass pg_restore --list: nothing kept")
        code, rows = self.fx.pipe(self.db.argv("pg_restore --data-only -f -"), work / "db.dump", copy_rows)
        if code != 0:
            raise self.failed_writing("the row counts")
        remote = conf.value(self.app_dir.name, "VPSKIT_MEDIA_REMOTE")
        bucket = remote.split(":", 1)[-1] if remote else ""
        if remote:  # media in a bucket: its files, fetched here, go into the same archive as a volume's would
            (work / "media").mkdir()
            args, env = rclone(self.app_dir.name, "copy", remote, str(work / "media"))
            if not self.fx.run(*args, env=env, show=True).ok:
                raise self.failed_writing(f"the media from the bucket {bucket}")
            if not self.fx.run("tar", "-C", str(work / "media"), "-cf", str(work / "media.tar"), ".").ok:
                raise self.failed_writing("the media archive")
            shutil.rmtree(work / "media")
        elif not self.fx.run("docker", "run", "--rm", "--network", "none", "-v", f"{project}_media:/media:ro",
                             "--entrypoint", "tar", self.db.image(), "-C", "/media", "-cf", "-", ".",
                             out=work / "media.tar").ok:
            raise self.failed_writing("the media archive")
        try:
            sums = media_sums(work / "media.tar")
        except (OSError, tarfile.TarError) as err:
            raise self.failed_writing(f"the media checksums ({err})") from err
        (work / "media.sha256").write_text(sums)
        (work / "SHA256SUMS").write_text("".join(
            f"{hashlib.sha256((work / n).read_bytes()).hexdigest()}  {n}\n" for n in ("db.dump", "media.tar",
                                                                                     "media.sha256")))
        pg_version = self.db.server_version()
        apps = self.d.ids("app", all_=False)
        app_image = (self.d.inspect(apps[0], "{{.Config.Image}}") or "") if apps else ""
        db_bytes, media_bytes = (work / "db.dump").stat().st_size, (work / "media.tar").stat().st_size
        files = len(sums.splitlines())
        manifest = {"name": self.now, "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "project": project, "app_image": app_image, "app_version": app_image.rsplit(":", 1)[-1]
                    if ":" in app_image else "", "postgres_version": pg_version, "db_dump_bytes": db_bytes,
                    "media_tar_bytes": media_bytes, "media_files": files, "media_bucket": bucket,
                    "seconds": int(self.fx.clock() - start), "tables": rows}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for f in work.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        sync_dir(work)
        work.rename(dest)
        sync_dir(self.root)
        dumped = f" (pg_dump of {where}, from this server)" if external else ""
        source = f", from the bucket {bucket}" if remote else ""
        self.say(f"backup {self.now} complete in {int(self.fx.clock() - start)}s: database {human_size(db_bytes)}"
                 f"{dumped}, media {human_size(media_bytes)} ({files} files{source}), in {dest}")

    def retention(self) -> None:
        """The same rule the offsite copies follow (vpskit/server/backups.py)."""
        daily, weekly, monthly = self.keep
        kept = set(gfs_keep(self.now, self.names(), daily, weekly, monthly))
        for name in self.names():
            if name not in kept:
                shutil.rmtree(self.root / name)
                self.say(f"pruned {name}")

    def offsite(self) -> bool:
        """The copy offsite once the backup verified here (backup_offsite): its failure fails this backup, whose
        local copy stays; the deploy's pre-update backup only warns, so a release is not held up."""
        repository = conf.value(self.app_dir.name, "RESTIC_REPOSITORY")
        if not repository:
            return True
        from .offsite import Offsite, OffsiteFailed

        start = self.fx.clock()
        try:
            snapshot, _, size = Offsite(self.app_dir.name).copy(self.root, self.now).partition(" ")
        except OffsiteFailed as failed:
            self.fx.say(f"vpskit offsite: {failed}")
        else:
            self.say(f"offsite copy of {self.now}: snapshot {snapshot} in {repository} ({size}, "
                     f"{int(self.fx.clock() - start)}s)")
            return True
        if self.soft:
            self.say(f"WARNING: the offsite copy of {self.now} failed (above); the local backup is kept and the update "
                     "goes on")
            return True
        return False
