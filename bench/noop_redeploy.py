"""Time of a no-op redeploy against a one-operation pyinfra run to the same host, in one run.

    .venv/bin/python bench/noop_redeploy.py [--runs 5]

Starts a fresh test-bed VPS, deploys example/ once (untimed), then alternates no-op redeploys and
one-operation runs and prints the medians and their ratio (target: within 4x). Removes the VPS after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.testbed import vps as testbed  # noqa: E402


def timed(env: dict, deploy_file: str) -> float:
    t0 = time.monotonic()
    out = subprocess.run([str(ROOT / ".venv/bin/pyinfra"), "-y", "inventory.py", deploy_file], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"{deploy_file} failed:\n{out.stdout[-3000:]}{out.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    host = testbed.start(f"vpskit-bench-{os.getpid()}", session="bench")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env_file = Path(tmp) / ".env"
            env_file.write_text("POSTGRES_PASSWORD=bench-password\nPAYLOAD_SECRET=" + "b" * 40 + "\n")
            env = {**os.environ, **host.env(), "VPSKIT_ENV_FILE": str(env_file), "VPSKIT_IMAGE_TRANSPORT": "ssh"}
            first = timed(env, "deploy.py")
            print(f"first deploy (image cached locally or built): {first:.1f}s")
            noop, floor = [], []
            for _ in range(args.runs):
                noop.append(timed(env, "deploy.py"))
                floor.append(timed(env, "bench/one_operation.py"))
        n, f = statistics.median(noop), statistics.median(floor)
        print(f"no-op redeploy:      median {n:.2f}s  runs {', '.join(f'{x:.2f}' for x in noop)}")
        print(f"one-operation floor: median {f:.2f}s  runs {', '.join(f'{x:.2f}' for x in floor)}")
        print(f"ratio: {n / f:.2f}x (target: within 4x)")
    finally:
        testbed.remove(host.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
