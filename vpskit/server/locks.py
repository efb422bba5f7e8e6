"""Locks held across processes with flock(2), so shell (tasks/stop.py's command, the proxy's port
changes) and this program exclude each other on the same files."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .effects import Effects
from .history import now_utc

BACKUPS = "the backups' lock"  # one backup, restore or drill of an app at a time (BACKUP_ROOT/.lock)


class Lock:
    """An exclusive flock on `path`, waited for up to `seconds` (saying who holds it every 10 s). The holder's
    description is written beside it (PATH.holder) for whoever waits next."""

    def __init__(self, path: Path, fx: Effects):
        self.path, self.fx, self.fd = path, fx, -1

    def take(self, seconds: int, what: str, label: str = "the app's lock") -> str:
        """"" once held; else the one-line refusal (nothing was changed)."""
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        start = self.fx.clock()
        said = None
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            waited = int(self.fx.clock() - start)
            holder = self.holder()
            if waited >= seconds:
                os.close(self.fd)
                self.fd = -1
                return (f"another operation on this app still holds its lock after {seconds}s ({holder}): nothing "
                        "was changed; run this again when it has finished")
            if said is None or waited - said >= 10:
                if label == BACKUPS:
                    self.fx.say(f"vpskit: waiting for another backup or restore of this app to end (lock {self.path}, "
                                f"{waited}s of {seconds}s)")
                else:
                    self.fx.say(f"vpskit: waiting for {label}, held by {holder} ({waited}s of {seconds}s)")
                said = waited
            self.fx.sleep(0.5)
        self.holder_path().write_text(f"{what}, since {now_utc()}\n")
        return ""

    def holder_path(self) -> Path:
        return self.path.with_name(self.path.name + ".holder")

    def holder(self) -> str:
        try:
            return self.holder_path().read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


@contextlib.contextmanager
def app_and_backups(app_dir: Path, root: Path, fx: Effects, seconds: int, what: str) -> Iterator[str]:
    """The app's lock, then its backups' (a restore or an upgrade changes the database the backups read, and
    takes a backup itself): "" while both are held, else the one-line refusal (neither is held then). The backups'
    folder is made, private, once the app's lock is held."""
    app_lock, backups_lock = Lock(app_dir / ".vpskit.lock", fx), Lock(root / ".lock", fx)
    try:
        refusal = app_lock.take(seconds, what)
        if not refusal:
            root.mkdir(parents=True, exist_ok=True)
            os.chmod(root, 0o700)
            if backups_lock.take(seconds, what, BACKUPS):
                refusal = (f"another backup or restore is running (lock {root}/.lock): try again when it ends "
                           f"(waited {seconds}s)")
        if refusal:
            yield refusal
        else:  # and no job runs in the app meanwhile (the jobs worker waits: vpskit/server/jobs.py)
            from .jobs import quiet  # here: jobs.py imports proxy.py, which imports this module

            with quiet(app_dir, fx, seconds, what):
                yield ""
    finally:
        backups_lock.release()
        app_lock.release()
