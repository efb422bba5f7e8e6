"""What the benchmarks share: a fresh test-bed VPS with example/ deployed, and timed pyinfra runs on it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.testbed import vps as testbed  # noqa: E402


@contextmanager
def deployed_vps(tag: str, **settings: str) -> Iterator[tuple[testbed.VPS, Callable[..., float]]]:
    """Yields (vps, run): run(deploy_file, *args) times one pyinfra run and exits the benchmark if it fails.
    `settings` become VPSKIT_<NAME> variables. The first deploy is done (untimed) before the yield."""
    host = testbed.start(f"vpskit-bench-{tag}-{os.getpid()}", session="bench")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env_file = Path(tmp) / ".env"
            env_file.write_text("POSTGRES_PASSWORD=bench-password\nPAYLOAD_SECRET=" + "b" * 40 + "\n")
            env = {**os.environ, **host.env(), "VPSKIT_ENV_FILE": str(env_file), "VPSKIT_IMAGE_TRANSPORT": "ssh",
                   **{f"VPSKIT_{k.upper()}": v for k, v in settings.items()}}

            def run(deploy_file: str, *args: str) -> float:
                t0 = time.monotonic()
                out = subprocess.run([str(ROOT / ".venv/bin/pyinfra"), "-y", "inventory.py", deploy_file, *args],
                                     cwd=ROOT, env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{deploy_file} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
                return time.monotonic() - t0

            print(f"first deploy (image cached locally or built): {run('deploy.py'):.1f}s")
            yield host, run
    finally:
        testbed.remove(host.name)


def example_version_or_exit() -> str:
    """The version deploy.py gives example/ now; exits unless this machine has that image built."""
    from tests.support import app_version

    good = app_version(ROOT / "example", "example")
    if subprocess.run(["docker", "image", "inspect", f"example:{good}"], capture_output=True).returncode != 0:
        sys.exit(f"example:{good} is not on this machine: deploy example/ once (or run make test) first")
    return good
