"""The releases kept on a server for rollback, and which one a rollback goes back to. The server keeps them
numbered in the order they were made (releases/index and `current`, whose format lives in
vpskit/server/history.py); a release of the same version
with another configuration is a release of its own. Read by the ReleaseHistory fact; pure here.

    history = History.parse(lines)           # the fact's output
    target = history.rollback_target()       # or .rollback_target(version="v1"); SettingsError when there is none
"""

from __future__ import annotations

from dataclasses import dataclass

from vpskit.server.history import Entry
from vpskit.settings import SettingsError


@dataclass(frozen=True)
class Release:
    number: int
    version: str
    config: str  # the start of the hash of its files ("-" for a release kept by an older vpskit)
    came_after: int | None  # the release that was serving when this one was made
    at: str  # when it was made (UTC)

    def describe(self) -> str:
        return f"release {self.number} ({self.version}, configuration {self.config})"


@dataclass(frozen=True)
class History:
    releases: tuple[Release, ...]  # oldest first
    current: int | None  # the release serving now

    @classmethod
    def parse(cls, lines) -> History:
        """From the fact's lines: `current N`, then `release N<TAB>VERSION<TAB>CONFIG<TAB>FROM<TAB>TIME` per kept
        release; or, on a server whose releases an older vpskit kept (releases/<version>.yml), `current VERSION`
        and `older VERSION` per release, oldest first, numbered 1, 2, ... here as the server program
        numbers them (vpskit/server/history.py upgrade_older)."""
        current_text, kept, older = "", [], []
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "current":
                current_text = rest.strip()
            elif kind == "release":
                entry = Entry.parse(rest)
                if entry is not None:
                    kept.append(Release(entry.number, entry.version, entry.config, entry.came_after, entry.at))
            elif kind == "older" and rest.strip():
                older.append(rest.strip())
        if older and not kept:
            kept = [Release(i, v, "-", i - 1 if i > 1 else None, "") for i, v in enumerate(older, 1)]
            current = next((r.number for r in kept if r.version == current_text), None)
        else:
            current = int(current_text) if current_text.isdigit() else None
        return cls(tuple(kept), current)

    def get(self, number: int | None) -> Release | None:
        return next((r for r in self.releases if r.number == number), None)

    def rollback_target(self, version: str = "") -> Release:
        """What a rollback goes back to: with `version`, the newest kept release of it other than the one serving;
        else the release that was serving before the current one was made (a rollback moves back along that
        chain, so a second rollback goes further back instead of returning), or, when that one is gone, the
        newest kept release older than the current one."""
        kept = ", ".join(f"{r.number} ({r.version})" for r in self.releases) or "none"
        if version:
            found = [r for r in self.releases if r.version == version and r.number != self.current]
            if not found:
                raise SettingsError(f"no release of version {version} kept to roll back to (kept: {kept}): list "
                                    "them with --data list=true")
            return found[-1]
        now = self.get(self.current)
        if now is None:
            raise SettingsError(f"no release is serving here to roll back from (kept: {kept}): deploy first")
        before = self.get(now.came_after) or next(
            (r for r in reversed(self.releases) if r.number < now.number), None)
        if before is None:
            raise SettingsError(f"no release before {now.describe()} is kept to roll back to (kept: {kept})")
        return before
