"""Offsite copies with restic (backup_offsite): a verified local backup copied, confirmed, then the remote copies
pruned by the same retention rule as the local ones; a snapshot fetched back (latest, a backup name or a snapshot
id) and checked against its own checksums; the snapshots listed.

Repository, password and keys come from the app's root-only /etc/vpskit/<app>/offsite.env (vpskit/offsite.py
renders it): restic reads them from its environment, so they never reach a command line, the process list or a
log. Every failure ends with one line naming the repository and the cause.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import conf
from .backup import human_size
from .backups import NAME, gfs_keep
from .drill import bad_checksums

MIN_RESTIC = (0, 16, 0)  # --retry-lock came with 0.16 (Ubuntu 24.04 has 0.16, Debian 13 0.18; Debian 12's 0.14)


class OffsiteFailed(Exception):
    """One line: the repository and the cause."""


def cause(stderr: str) -> str:
    """The first line of restic's error that says something (without "Fatal: "), else why it kept retrying."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if "retrying after" not in line]
    if said:
        return said[0].removeprefix("Fatal: ")
    retried = [line for line in lines if "retrying after" in line]
    return retried[-1].split("retrying after", 1)[1].split(": ", 1)[-1] if retried else ""


def version_ok(version_line: str) -> bool:
    """`restic 0.18.0 compiled with ...`: new enough for vpskit's offsite copies."""
    try:
        parts = tuple(int(x) for x in version_line.split()[1].split("-")[0].split(".")[:3])
    except (IndexError, ValueError):
        return False
    return parts >= MIN_RESTIC


def backup_of(snapshot: dict) -> str:
    """The local backup name a snapshot holds (its `backup=NAME` tag), or ""."""
    return next((t.split("=", 1)[1] for t in snapshot.get("tags") or [] if t.startswith("backup=")), "")


def to_forget(snapshots: list[dict], name: str, keep: tuple[int, int, int]) -> list[str]:
    """The short ids of the app's snapshots whose backup the retention rule drops (the copy of `name` just made is
    the newest)."""
    names = [backup_of(s) for s in snapshots if backup_of(s)]
    kept = set(gfs_keep(name, names, *keep))
    return [s["short_id"] for s in snapshots if backup_of(s) and backup_of(s) not in kept]


def summary(messages: str) -> dict:
    """restic backup --json: its last "summary" message."""
    found = {}
    for line in messages.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if isinstance(m, dict) and m.get("message_type") == "summary":
            found = m
    return found


class Offsite:
    def __init__(self, app: str):
        self.values = conf.read(app)
        self.app = self.values.get("VPSKIT_APP") or app
        self.repo = self.values.get("RESTIC_REPOSITORY", "")
        self.limit = int(os.environ.get("VPSKIT_OFFSITE_TIMEOUT", "1800"))
        keep = (self.values.get("VPSKIT_KEEP") or "7 4 6").split()
        self.keep = tuple(int(k) for k in (keep + ["0", "0", "0"])[:3])

    # --- restic, with the options every call shares and the configuration in its environment only
    def restic(self, *args: str) -> list[str]:
        extra = ["-o", f"sftp.command={self.values['VPSKIT_SFTP_COMMAND']}"] if self.values.get(
            "VPSKIT_SFTP_COMMAND") else []
        return ["restic", "--retry-lock", "2m", *extra, *args]

    def env(self) -> dict:
        # Snapshot times (and so the retention's days and weeks) in UTC, as the local backups' names.
        return {**os.environ, **self.values, "TZ": "UTC"}

    def run(self, *args: str, timeout: float | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
        try:
            done = subprocess.run(self.restic(*args), capture_output=True, text=True, env=self.env(), cwd=cwd,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as t:
            return 124, "", (t.stderr or b"").decode(errors="replace") if isinstance(t.stderr, bytes) else (
                t.stderr or "")
        return done.returncode, done.stdout, done.stderr

    def bounded(self, seconds: int, *args: str) -> tuple[int, str]:
        """restic ARGS: 124 after `seconds`; 10 as soon as an S3 bucket is reported missing (restic keeps retrying
        that instead of saying "no repository")."""
        with tempfile.TemporaryFile(mode="w+") as err:
            proc = subprocess.Popen(self.restic(*args), stdout=subprocess.DEVNULL, stderr=err, env=self.env(),
                                    stdin=subprocess.DEVNULL)
            start = time.monotonic()
            while proc.poll() is None:
                err.seek(0)
                text = err.read()
                if "bucket does not exist" in text or "NoSuchBucket" in text:
                    proc.kill()
                    proc.wait()
                    return 10, text
                if time.monotonic() - start >= seconds:
                    proc.kill()
                    proc.wait()
                    return 124, text
                time.sleep(0.2)
            err.seek(0)
            return proc.returncode, err.read()

    def ready(self) -> None:
        if not self.values:
            raise OffsiteFailed(f"no offsite configuration ({conf.path(self.app)}): set backup_offsite and run "
                                "deploy.py")
        if not self.repo:
            raise OffsiteFailed("backup_offsite is not set: nothing to copy to or fetch from")
        if not shutil.which("restic"):
            raise OffsiteFailed("restic is not installed on this server: run deploy.py (it installs restic when "
                                "backup_offsite is set)")
        line = subprocess.run(["restic", "version"], capture_output=True, text=True, check=False).stdout
        if not version_ok(line):
            version = (line.split() + ["?", "?"])[1]
            raise OffsiteFailed(f"restic {version} on this server is too old for vpskit's offsite copies: 0.16 or "
                                "newer is needed (Debian 13, Ubuntu 24.04)")

    def open_repo(self, init: bool, after: str) -> None:
        """The repository answers with this password (created on first use with `init`); otherwise one line with
        the cause, then `after` (what that means for this run)."""
        self.ready()
        rc, err = self.bounded(120, "cat", "config")
        if rc == 0:
            return
        if rc == 10 or (rc != 124 and "Is there a repository at the following location" in err):
            if not init:
                raise OffsiteFailed(f"no restic repository at {self.repo} yet: nothing to restore from")
            made, _, err = self.run("init", timeout=120)
            if made == 0:
                print(f"vpskit offsite: initialized the restic repository {self.repo}", file=sys.stderr)
                return
            rc = 1
        why = cause(err)
        if rc == 124:  # cut short: what restic kept retrying on says more than its goodbye
            retried = [line for line in err.splitlines() if "retrying after" in line]
            last = retried[-1].split("retrying after", 1)[1].split(": ", 1)[-1] if retried else ""
            why = "no answer within 120s" + (f", last error: {last}" if last else "")
        if rc == 12 or "wrong password" in why:
            wrong = "does not open with RESTIC_PASSWORD from .env (wrong password)"
            raise OffsiteFailed(f"the restic repository {self.repo} {wrong}: {after}")
        raise OffsiteFailed(f"cannot reach the restic repository {self.repo} ({why or f'restic exited {rc}'}): "
                            f"{after}")

    def snapshots(self, *filters: str) -> list[dict] | None:
        rc, out, _ = self.run("snapshots", "--json", *filters, timeout=300)
        if rc != 0:
            return None
        try:
            listed = json.loads(out or "[]")
        except ValueError:
            return None
        return listed if isinstance(listed, list) else None

    # --- the three things it does
    def copy(self, root: Path, name: str) -> str:
        """After a verified local backup: upload, confirm, then remote retention. Returns "SHORTID ADDED new of
        TOTAL"."""
        self.open_repo(True, f"the local backup {name} is kept")
        at = f"{name[0:4]}-{name[4:6]}-{name[6:8]} {name[9:11]}:{name[11:13]}:{name[13:15]}"
        # From inside the backup's folder: the snapshot holds its files at the top, as fetch puts them back.
        rc, out, err = self.run("backup", "--host", self.app, "--tag", "vpskit", "--tag", f"backup={name}", "--time",
                                at, "--json", "--quiet", ".", timeout=self.limit, cwd=root / name)
        if rc != 0:
            why = f"it did not finish within {self.limit}s" if rc == 124 else (cause(err) or "restic backup failed")
            raise OffsiteFailed(f"copying backup {name} to {self.repo} failed: {why}; the local backup is kept")
        done = summary(out)
        sid = done.get("snapshot_id", "")
        # Confirmed: the repository lists the new snapshot before any remote retention may remove anything.
        listed = self.snapshots(sid) if sid else None
        if not sid or not listed or not any(s.get("id") == sid for s in listed):
            raise OffsiteFailed(f"backup {name} was sent to {self.repo} but the snapshot is not listed there: the "
                                "local backup is kept; remote retention skipped")
        # Remote retention by the local rule itself (restic's own policy keeps extra "oldest" snapshots).
        mine = self.snapshots("--host", self.app, "--tag", "vpskit")
        if mine is None:
            print("vpskit offsite: remote retention skipped (the snapshots could not be listed): the copy itself is "
                  "safe", file=sys.stderr)
        else:
            drop = to_forget(mine, name, self.keep)
            if drop:
                rc, _, err = self.run("forget", "--prune", "--quiet", *drop, timeout=self.limit)
                if rc != 0:
                    print(f"vpskit offsite: remote retention failed ({cause(err)}): the copy itself is safe",
                          file=sys.stderr)
        last = root / ".offsite-last.new"
        last.write_text(f"{name} {sid} {int(time.time())}\n")
        last.replace(root / ".offsite-last")
        added, total = int(done.get("data_added_packed", 0) or 0), int(done.get("total_bytes_processed", 0) or 0)
        return f"{sid[:8]} {human_size(added)} new of {human_size(total)}"

    def fetch(self, which: str, dest: Path) -> tuple[str, str]:
        """A snapshot (latest, a backup name or a snapshot id) into `dest`, verified: (backup name, short id)."""
        self.open_repo(False, "nothing was changed")
        if which == "latest":
            listed = self.snapshots("--host", self.app, "--tag", "vpskit")
        elif NAME.match(which):
            listed = self.snapshots("--host", self.app, "--tag", f"vpskit,backup={which}")
        else:
            listed = self.snapshots(which)
        snap = sorted(listed or [], key=lambda s: s.get("time", ""))[-1:] if listed else []
        sid, name = (snap[0].get("id", ""), backup_of(snap[0])) if snap else ("", "")
        if not sid or not name:
            raise OffsiteFailed(f"no offsite snapshot '{which}' of {self.app} in {self.repo}: list them with "
                                "tasks/backup.py --data list=offsite")
        print(f"vpskit offsite: fetching backup {name} (snapshot {sid[:8]}) from {self.repo}", file=sys.stderr)
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir(mode=0o700)
        rc, _, err = self.run("restore", sid, "--target", str(partial), "--quiet", timeout=self.limit)
        if rc != 0:
            shutil.rmtree(partial, ignore_errors=True)
            why = f"it did not finish within {self.limit}s" if rc == 124 else (cause(err) or "restic restore failed")
            damaged = "the repository may be damaged; nothing was changed"
            raise OffsiteFailed(f"snapshot {sid[:8]} of {self.repo} cannot be read back ({why}): {damaged}")
        if not (partial / "SHA256SUMS").exists() or bad_checksums(partial, partial / "SHA256SUMS"):
            shutil.rmtree(partial, ignore_errors=True)
            raise OffsiteFailed(f"snapshot {sid[:8]} of {self.repo} came back with files that fail their checksums: "
                                "nothing was changed")
        partial.rename(dest)
        return name, sid[:8]

    def list(self) -> int:
        self.open_repo(False, "nothing to list")
        return subprocess.run(self.restic("snapshots", "--host", self.app, "--tag", "vpskit", "--compact"),
                              env=self.env(), check=False).returncode

