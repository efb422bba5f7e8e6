"""State passed between the server program's processes: JSON written whole and renamed, never sourced and
never read half-written (a status file once read while being written made a failed release report success)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


def write_json(path: Path, value: dict, mode: int = 0o600) -> None:
    """`value` at `path`, atomically: written to a sibling, flushed, then renamed over it."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """The value at `path`, or None when there is none (a rename is atomic: never a partial one)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class AttemptParams:
    """One release attempt, as `release start` (or `rollback`) hands it to the detached `release run`."""

    version: str
    files_hash: str  # sha256 of compose file + .env + proxy route (history.files_hash)
    who: str  # for the release log and the lock holder
    timeout: int = 180  # seconds for the database, each migration run and readiness
    keep: int = 3  # releases kept for rollback
    drain: int = 10  # seconds the old container may finish its requests
    lock_wait: int = 300  # seconds to wait for the app's lock
    migrate: tuple[str, ...] = ()  # migrations the one-shot runner applies and must leave recorded
    kind: str = "release"  # or "rollback"
    release: int | None = None  # a rollback: the kept release it goes back to
    from_version: str = ""  # a rollback: the version serving before
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["migrate"] = list(self.migrate)
        return d

    @classmethod
    def from_json(cls, d: dict) -> AttemptParams:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["migrate"] = tuple(known.get("migrate", ()))
        return cls(**known)


@dataclass(frozen=True)
class Status:
    """How an attempt ended: its exit code and the one line that says why (empty when it succeeded)."""

    code: int
    reason: str = ""

    @classmethod
    def read(cls, path: Path) -> Status | None:
        d = read_json(path)
        if d is None:
            return None
        return cls(int(d.get("code", 1)), str(d.get("reason", "")))

    def write(self, path: Path) -> None:
        write_json(path, {"code": self.code, "reason": self.reason}, 0o644)
