"""A database for `next build`, when the app reads Payload while building.

Payload's templates render pages at build time: `generateStaticParams` lists the pages from the database,
static pages and layouts read collections and globals. An image build has no database (and must not have the
production one: the image would carry its content and the build would need its secrets). So, when the app
reads Payload while building, the build runs beside a **throwaway PostgreSQL** on the deploying machine,
published on 127.0.0.1 only, that the build's own migrations bring to the app's schema (`payload migrate`, then
the app's build script). The build gets its URL and a PAYLOAD_SECRET made for this build alone, as build
arguments named without a value (their values come from the docker CLI's environment, so no process list shows
them); only the build stage declares them, so no layer of the image that ships carries them. The database goes
when the build ends. The pages built from it are empty; Payload's templates render the real ones on request and
revalidate them (their hooks), as for any page created after a build.

    decision = build_database.decide("auto", info)   # Decision(True, "src/app/(frontend)/page.tsx ... read Payload")
    with build_database.throwaway("postgres:17", "shop") as env: ...   # {"DATABASE_URL": ..., ...}
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

from vpskit.app_info import AppInfo
from vpskit.settings import SettingsError

BUILD_ARGS = ("DATABASE_URL", "DATABASE_URI", "PAYLOAD_SECRET")  # the names the build stage declares
USER = "payload"
READY_LIMIT = 90  # seconds for the throwaway database to accept connections
LABEL = "vpskit.build-database"


@dataclass(frozen=True)
class Decision:
    use: bool
    why: str  # for the build's line: what it has, and why


def decide(setting: str, info: AppInfo, build_on: str = "local") -> Decision:
    """Whether the build gets a throwaway database: build_database "always", "never", or "auto" (when some page,
    layout or file they import reads Payload while `next build` renders it: info.build_reads)."""
    reads = info.build_reads
    if setting == "never" or (setting == "auto" and not reads):
        if reads:
            return Decision(False, f'no database (build_database = "never", though {_files(reads)} read Payload)')
        return Decision(False, "no database (nothing reads Payload while building)")
    asked = f"{_files(reads)} read Payload while building" if reads else 'build_database = "always"'
    if build_on != "local":
        raise SettingsError(f'build_on="server" builds without a database, but the build needs one ({asked}): set '
                            'build_on = "local" (vpskit then builds beside a throwaway PostgreSQL), or make those '
                            "pages dynamic (TROUBLESHOOTING 54)")
    return Decision(True, f"a throwaway PostgreSQL ({asked})")


def _files(reads: tuple[str, ...]) -> str:
    shown = ", ".join(reads[:3])
    return shown + (f" and {len(reads) - 3} more" if len(reads) > 3 else "")


def _docker(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def stale(names: list[str], alive) -> list[str]:
    """The build databases (vpskit-build-db-<app>-<pid>-<hex>) whose deploy process `alive(pid)` says is gone."""
    out = []
    for name in names:
        pid = name.rsplit("-", 2)[-2] if name.count("-") >= 5 else ""
        if pid.isdigit() and not alive(int(pid)):
            out.append(name)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> None:
    """Removes the build databases a deploy stopped mid-build left running (they hold memory and a port)."""
    names = _docker("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}").stdout.split()
    for name in stale(names, _alive):
        _docker("rm", "-f", "-v", name)


@contextlib.contextmanager
def throwaway(image: str, app: str) -> Iterator[dict[str, str]]:
    """A PostgreSQL of `image` for one build, on 127.0.0.1 of this machine, removed afterwards; yields the
    environment the build needs (BUILD_ARGS). RuntimeError when it cannot start."""
    remove_stale()
    name = f"vpskit-build-db-{app}-{os.getpid()}-{secrets.token_hex(3)}"
    password = secrets.token_hex(16)
    started = _docker("run", "-d", "--rm", "--name", name, "--label", f"{LABEL}={app}", "-p", "127.0.0.1::5432",
                      "--tmpfs", "/var/lib/postgresql/data", "-e", f"POSTGRES_USER={USER}", "-e", "POSTGRES_DB=payload",
                      "-e", "POSTGRES_PASSWORD", image, env={"POSTGRES_PASSWORD": password})
    if started.returncode != 0:
        raise RuntimeError(f"the build's throwaway database ({image}) did not start: {started.stderr.strip()[-300:]}")
    try:
        deadline = time.monotonic() + READY_LIMIT
        # Over TCP: the image's first start serves its init scripts on the socket only, then restarts.
        while _docker("exec", name, "pg_isready", "-q", "-h", "127.0.0.1", "-U", USER, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the build's throwaway database ({image}) was not ready within {READY_LIMIT}s")
            time.sleep(0.5)
        port = _docker("port", name, "5432/tcp").stdout.split()[0].rsplit(":", 1)[1]
        url = f"postgresql://{USER}:{password}@127.0.0.1:{port}/payload"
        yield {"DATABASE_URL": url, "DATABASE_URI": url, "PAYLOAD_SECRET": secrets.token_hex(32)}
    finally:
        _docker("rm", "-f", "-v", name)
