"""The releases kept on a server and the release log, in the app's folder: their formats and the rules about
them (which releases are kept, which images go, what a rollback's .env holds). One home for each: the server
program records releases with them, and the client's facts and tasks read them with the same code.

    releases/index   one line per kept release, oldest first: N, VERSION, CONFIG, FROM, TIME (tab-separated)
    releases/N.yml, N.env, N.caddy, N.migrations   its files; `current` holds the N serving now
    releases/log     one JSON object per attempt and line (LogLine: at, version, config, who, result as
                     KIND:ok|failed, seconds, reason), the file written whole and renamed (write_log); the
                     tab-separated lines an older vpskit wrote are read too
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, fields
from pathlib import Path

SECRETS_HEADER = "# vpskit secret keys:"  # the .env line naming the secrets (written by vpskit/envfile.py)
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def files_hash(compose: str, env: str, route: str = "") -> str:
    """What a release applies, hashed: compose file, .env and proxy route (a missing route counts as empty)."""
    return hashlib.sha256((compose + env + route).encode()).hexdigest()


def dir_hash(folder: Path) -> str:
    """files_hash of the files in `folder` (docker-compose.yml, .env, proxy-route.caddy)."""
    route = folder / "proxy-route.caddy"
    return files_hash((folder / "docker-compose.yml").read_text(), (folder / ".env").read_text(),
                      route.read_text() if route.exists() else "")


@dataclass(frozen=True)
class Entry:
    """One kept release (a line of releases/index)."""

    number: int
    version: str
    config: str  # the start of the hash of its files ("-" for a release kept by an older vpskit)
    came_after: int | None  # the release serving when this one was made
    at: str  # when it was made (UTC)

    @classmethod
    def parse(cls, line: str) -> Entry | None:
        n, version, config, came_after, at = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
        if not n.strip().isdigit():
            return None
        return cls(int(n), version, config, int(came_after) if came_after.isdigit() else None, at)

    def line(self) -> str:
        after = "-" if self.came_after is None else str(self.came_after)
        return f"{self.number}\t{self.version}\t{self.config}\t{after}\t{self.at}\n"


def parse_index(text: str) -> list[Entry]:
    return [e for e in (Entry.parse(line) for line in text.splitlines()) if e is not None]


@dataclass(frozen=True)
class LogLine:
    """One attempt in releases/log."""

    at: str
    version: str
    config: str
    who: str
    result: str  # KIND:ok or KIND:failed
    seconds: str
    reason: str = "-"

    @classmethod
    def parse(cls, line: str) -> LogLine:
        """A line of the log: a JSON object, or the tab-separated fields of an older vpskit's log."""
        text = line.strip()
        if text.startswith("{"):
            try:
                found = json.loads(text)
            except ValueError:
                found = {}
            if isinstance(found, dict):
                return cls(*(str(found.get(f, "")) for f in _LOG_FIELDS))
        return cls(*(text.split("\t") + [""] * 7)[:7])

    def line(self) -> str:
        """One JSON object on one line (each value on one line: a reason may quote a multi-line error)."""
        return json.dumps({f: " ".join(str(getattr(self, f)).split()) or "-" for f in _LOG_FIELDS}) + "\n"

    def shown(self) -> str:
        """The fields as `release list` prints them."""
        return "  ".join(" ".join(str(getattr(self, f)).split()) or "-" for f in _LOG_FIELDS)


_LOG_FIELDS = tuple(f.name for f in fields(LogLine))  # the log's keys, in the dataclass's order


def write_log(path: Path, line: LogLine) -> None:
    """The log with `line` added, written whole to a temporary file and renamed over it under the log's own lock:
    a reader sees the log before or after, never half a line, and two writers lose neither's line."""
    import fcntl

    with open(path.with_name(".log.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = path.read_text() if path.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        tmp = path.with_name(".log.new")
        tmp.write_text(old + line.line())
        os.chmod(tmp, 0o644)
        tmp.replace(path)


def kept_numbers(numbers: list[int], keep: int, current: int) -> set[int]:
    """The releases kept after `current` was made: the newest `keep` by number, and the one serving now."""
    return set(sorted(numbers)[-keep:] if keep > 0 else []) | {current}


def next_number(numbers: list[int]) -> int:
    return max(numbers, default=0) + 1


def images_to_prune(refs: list[str], kept_versions: set[str], pending: set[str]) -> list[str]:
    """Of the app's image references (REPO:TAG), those that go: every one whose tag is no kept release's version
    (failed versions included: only kept releases can be rolled back to), except those the newest pushed files
    name (another deploy may have just shipped them to release next)."""
    return [r for r in refs if not r.endswith(":<none>") and r.rsplit(":", 1)[-1] not in kept_versions
            and r not in pending]


IMAGE_LINE = re.compile(r'^\s*image:\s*"?([^"\s]+)"?\s*$', re.M)


def compose_images(compose: str) -> set[str]:
    """The image references a compose file names."""
    return set(IMAGE_LINE.findall(compose))


def _key(line: str) -> str:
    m = _KEY.match(line)
    return m.group(1) if m else ""


def with_current_secrets(env: str, current: str) -> str:
    """A kept release's .env with today's secrets: the header lines (`# vpskit ...`) of `current`, and the value of
    each variable its secrets line names taken from `current` (added where `env` lacks it). A secret rotated
    because it leaked never comes back from an older release."""
    lines = current.splitlines()
    head = [line for line in lines if line.startswith("# vpskit ")]
    secret: list[str] = []
    for line in head:
        if line.startswith(SECRETS_HEADER):
            secret += line[len(SECRETS_HEADER):].split()
    values = {_key(line): line for line in lines if _key(line)}
    out: list[str] = []
    shown, done = False, set()
    for line in env.splitlines():
        if line.startswith("# vpskit "):
            if not shown:
                out += head
                shown = True
            continue
        k = _key(line)
        if k and not shown:
            out += head
            shown = True
        if k and k in secret and k in values:
            out.append(values[k])
            done.add(k)
            continue
        out.append(line)
    out += [values[k] for k in secret if k in values and k not in done]
    return "\n".join(out) + "\n"


def upgrade_older(releases: Path, current_file: Path) -> None:
    """Releases kept by an older vpskit (releases/<version>.yml, `current` naming a version) numbered in the order
    they were made, oldest first by time; nothing when releases/index exists already."""
    index = releases / "index"
    if index.exists():
        return
    releases.mkdir(parents=True, exist_ok=True)
    current = current_file.read_text().strip() if current_file.exists() else ""
    older = sorted(releases.glob("*.yml"), key=lambda p: p.stat().st_mtime)
    lines = []
    for n, yml in enumerate(older, 1):
        version = yml.name[:-4]
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(yml.stat().st_mtime))
        for ext in ("yml", "env", "caddy", "migrations"):
            old = releases / f"{version}.{ext}"
            if old.exists():
                old.rename(releases / f".{n}.{ext}.upgrading")
        lines.append(Entry(n, version, "-", n - 1 if n > 1 else None, at).line())
        if version == current:
            current_file.write_text(f"{n}\n")
    for part in releases.glob(".*.upgrading"):
        part.rename(releases / part.name[1:].removesuffix(".upgrading"))
    tmp = releases / "index.new"
    tmp.write_text("".join(lines))
    tmp.replace(index)
