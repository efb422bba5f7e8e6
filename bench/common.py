"""What the benchmarks share: a fresh test-bed VPS with example/ deployed (optionally sized like a server and
reachable with an admin logged in), timed pyinfra runs on it, a database filled to a size, memory figures."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import free_port, http, wait_until  # noqa: E402
from tests.testbed import vps as testbed  # noqa: E402

CGROUP = Path("/sys/fs/cgroup/memory/docker")  # cgroup v1 here: a VPS's inner containers are its siblings
PSQL = "cd /opt/example && sudo docker compose exec -T db psql -U payload -d payload -Atc"


def used(cgroup: Path) -> int:
    """What `docker stats` calls usage: memory in use minus the page cache that can be dropped at once."""
    try:
        usage = int((cgroup / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
        return usage - int(stat.get("total_inactive_file", 0))
    except OSError:
        return 0


def fill_database(host: testbed.VPS, mb: float) -> int:
    """Adds a table of about `mb` MB of random hex (neither TOAST nor pg_dump's compression makes it small);
    returns the database's size in bytes."""
    rows = int(mb * 1024 * 1.05)  # rows of ~1 KiB
    host.ssh(f"{PSQL} \"create table filler (id int, body text); insert into filler select g, "  # noqa: S608
             f"(select string_agg(md5(random()::text || g || i), '') from generate_series(1, 32) i) "
             f"from generate_series(1, {rows}) g\"", timeout=3600)
    return int(host.ssh(f"{PSQL} 'select pg_database_size(current_database())'").stdout.strip())


@dataclass(frozen=True)
class Site:
    """example/ deployed on `host`, its app at `base` (an SSH tunnel), an admin logged in with `token`."""

    host: testbed.VPS
    base: str
    token: str
    pyinfra: Callable[..., subprocess.CompletedProcess]  # pyinfra(deploy_file, *args): one run, not checked


def _pyinfra_env(host: testbed.VPS, env_file: Path, settings: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **host.env(), "VPSKIT_ENV_FILE": str(env_file), "VPSKIT_IMAGE_TRANSPORT": "ssh",
            **{f"VPSKIT_{k.upper()}": v for k, v in settings.items()}}


@contextmanager
def _vps_with_env(tag: str, memory: str | None, settings: dict[str, str]):
    host = testbed.start(f"vpskit-bench-{tag}-{os.getpid()}", session="bench", memory=memory, cpus="1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env_file = Path(tmp) / ".env"
            env_file.write_text("POSTGRES_PASSWORD=bench-password\nPAYLOAD_SECRET=" + "b" * 40 + "\n")
            env = _pyinfra_env(host, env_file, settings)

            def pyinfra(*argv: str) -> subprocess.CompletedProcess:
                return subprocess.run([str(ROOT / ".venv/bin/pyinfra"), "-y", "inventory.py", *argv], cwd=ROOT,
                                      env=env, capture_output=True, text=True)

            yield host, pyinfra
    finally:
        testbed.remove(host.name)


@contextmanager
def deployed_vps(tag: str, **settings: str) -> Iterator[tuple[testbed.VPS, Callable[..., float]]]:
    """Yields (vps, run): run(deploy_file, *args) times one pyinfra run and exits the benchmark if it fails.
    `settings` become VPSKIT_<NAME> variables. The first deploy is done (untimed) before the yield."""
    with _vps_with_env(tag, None, settings) as (host, pyinfra):
        def run(deploy_file: str, *args: str) -> float:
            t0 = time.monotonic()
            out = pyinfra(deploy_file, *args)
            if out.returncode != 0:
                sys.exit(f"{deploy_file} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
            return time.monotonic() - t0

        print(f"first deploy (image cached locally or built): {run('deploy.py'):.1f}s")
        yield host, run


@contextmanager
def deployed_site(tag: str, memory: str | None = None, **settings: str) -> Iterator[Site]:
    """A fresh VPS (with `memory`, e.g. "1g": sized like a server, 1 CPU, no swap) with example/ deployed,
    its port 3000 tunnelled to this machine and a first admin registered. Exits the benchmark if the deploy
    fails; removes the VPS after."""
    with _vps_with_env(tag, memory, settings) as (host, pyinfra):
        first = pyinfra("deploy.py")
        if first.returncode != 0:
            sys.exit(f"the first deploy failed:\n{first.stdout[-3000:]}{first.stderr[-3000:]}")
        local = free_port()
        base = f"http://127.0.0.1:{local}"
        tunnel = host.forward(3000, local)
        try:
            wait_until(lambda: http("GET", f"{base}/api/health/ready", timeout=3).status == 200, 60, "the tunnel")
            creds = {"email": "bench@example.com", "password": "a long enough password"}
            http("POST", f"{base}/api/users/first-register", creds)
            token = http("POST", f"{base}/api/users/login", creds).json()["token"]
            yield Site(host, base, token, pyinfra)
        finally:
            tunnel.terminate()


def default_limits() -> str:
    """The memory limits a deploy gives by default (group_data/all.py), as one line for a benchmark's output."""
    from vpskit.memory import PROXY_MB
    from vpskit.settings import defaults

    d = {x.key: x.value for x in defaults()}
    return (f"limits app {d['app_memory_limit']} (x2 during a release), db {d['db_memory_limit']}, "
            f"proxy {PROXY_MB}m")


def example_version_or_exit() -> str:
    """The version deploy.py gives example/ now; exits unless this machine has that image built."""
    from tests.support import app_version

    good = app_version(ROOT / "example", "example")
    if subprocess.run(["docker", "image", "inspect", f"example:{good}"], capture_output=True).returncode != 0:
        sys.exit(f"example:{good} is not on this machine: deploy example/ once (or run make test) first")
    return good
