"""Time of a no-op redeploy against a one-operation pyinfra run to the same host, in one run.

    .venv/bin/python bench/noop_redeploy.py [--runs 5]

Starts a fresh test-bed VPS, deploys example/ once (untimed), then alternates no-op redeploys and
one-operation runs and prints the medians and their ratio (target: within 4x). Removes the VPS after.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from common import deployed_vps


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with deployed_vps("noop") as (_, run):
        noop, floor = [], []
        for _ in range(args.runs):
            noop.append(run("deploy.py"))
            floor.append(run("bench/one_operation.py"))
    n, f = statistics.median(noop), statistics.median(floor)
    print(f"no-op redeploy:      median {n:.2f}s  runs {', '.join(f'{x:.2f}' for x in noop)}")
    print(f"one-operation floor: median {f:.2f}s  runs {', '.join(f'{x:.2f}' for x in floor)}")
    print(f"ratio: {n / f:.2f}x (target: within 4x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
