"""The app's static files (`/_next/static`) of every kept release, served by the bundled proxy (issue 27): a page
of version N asks for N's chunks after the switch to N+1, whose container does not have them. Each release adds
its new container's files to one folder per app that the proxy serves first (the app answers what is not there),
with a list of them per version; a release that is pruned takes away the files no kept version lists.

Files under `/_next/static` are named by content or build, so versions do not overwrite each other's."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .effects import Effects
from .proxy import PROXY_DIR

STATIC_IN_IMAGE = "/app/.next/static"  # where templates/Dockerfile puts them
LISTS = ".versions"  # in the app's folder: one file per version, its files' paths


def folder(app: str, root: Path = PROXY_DIR) -> Path:
    """The app's folder of kept static files on the server (the proxy sees it as /etc/caddy/static/APP)."""
    return root / "etc" / "static" / app


def files_under(top: Path) -> list[str]:
    return sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file())


def unlisted(lists: dict[str, set[str]], kept: set[str]) -> set[str]:
    """The files no kept version lists: what a prune takes away."""
    keep = set().union(*(files for version, files in lists.items() if version in kept))
    return set().union(*lists.values()) - keep


def publish(fx: Effects, container: str, app: str, version: str, root: Path = PROXY_DIR) -> str:
    """`container`'s static files added to the app's folder (existing ones left as they are) and listed for
    `version`: "" when done, else why not (the release goes on: the app itself still answers its own files)."""
    try:
        return _publish(fx, container, app, version, root)
    except OSError as err:
        return f"they could not be written ({err})"


def _publish(fx: Effects, container: str, app: str, version: str, root: Path) -> str:
    top = folder(app, root)
    static = top / "_next" / "static"
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        got = fx.run("docker", "cp", f"{container}:{STATIC_IN_IMAGE}/.", tmp)
        if not got.ok:
            return f"its static files could not be copied out ({got.err.strip()[:200]})"
        names = files_under(Path(tmp))
        for name in names:
            dest = static / name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / name, dest)
                os.chmod(dest, 0o644)
    lists = top / LISTS
    lists.mkdir(parents=True, exist_ok=True)
    (lists / version).write_text("".join(f"{n}\n" for n in names))
    return ""


def prune(app: str, kept: set[str], root: Path = PROXY_DIR) -> int:
    """The files of versions no longer kept go (those a kept version lists stay); the number removed. It never
    fails a release that has switched already: what cannot be removed stays until the next prune."""
    try:
        return _prune(app, kept, root)
    except OSError:
        return 0


def _prune(app: str, kept: set[str], root: Path) -> int:
    top = folder(app, root)
    lists_dir = top / LISTS
    if not lists_dir.is_dir():
        return 0
    lists = {f.name: set(f.read_text().split()) for f in lists_dir.iterdir() if f.is_file()}
    gone = unlisted(lists, kept)
    static = top / "_next" / "static"
    for name in gone:
        (static / name).unlink(missing_ok=True)
    for version in lists:
        if version not in kept:
            (lists_dir / version).unlink()
    for d in sorted((p for p in static.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty
    return len(gone)
