"""Releases under load: per case, the requests a probe made (GET /api/health/ready, ~25/s) and a writer
(POST /api/posts, ~4/s), the failures, the longest gap without an answer, the peak memory of the whole VPS
during the release (its own processes + every container it runs), and the release's wall time.

    .venv/bin/python bench/update_under_load.py

Starts a fresh test-bed VPS, deploys example/ (untimed), then: a good update, an update that never gets
ready, an update whose container exits at once, tasks/rollback.py. Removes the VPS after. Needs the
example image on this machine (`make test` or a deploy builds it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from common import CGROUP, default_limits, deployed_site, example_version_or_exit, used

from tests.support import Traffic
from tests.testbed import vps as testbed


class VpsMemory:
    """Samples the VPS's memory (its cgroup + each container its Docker runs) every 0.2 s; keeps the peak."""

    def __init__(self, host: testbed.VPS):
        self.host, self.peak, self._stop = host, 0, threading.Event()
        self.vps_id = testbed.docker("inspect", "-f", "{{.Id}}", host.name).stdout.strip()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _sample(self):
        inner: list[str] = []
        last_list = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_list > 1:  # containers come and go during a release
                inner = self.host.exec("docker", "ps", "-q", "--no-trunc", check=False).stdout.split()
                last_list = time.monotonic()
            total = used(CGROUP / self.vps_id) + sum(used(CGROUP / c) for c in inner)
            self.peak = max(self.peak, total)
            time.sleep(0.2)


def variant(good: str, tag: str, cmd: str = "") -> str:
    lines = [f"FROM example:{good}", f"LABEL vpskit.bench.variant={tag}"]
    if cmd:
        lines.append(f'CMD ["node", "-e", "{cmd}"]')
    subprocess.run(["docker", "build", "-q", "--label", "vpskit.testbed.session=bench", "-t", f"example:{tag}", "-"],
                   input="\n".join(lines) + "\n", text=True, check=True, capture_output=True,
                   env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return tag


def main() -> int:
    good = example_version_or_exit()
    try:
        with deployed_site("load", backup_before_update="false") as site:
            cases = [
                ("good update", ("deploy.py", "--data", f"app_version={variant(good, 'bench-good')}")),
                ("never gets ready", ("deploy.py", "--data", "health_timeout=30", "--data",
                                      f"app_version={variant(good, 'bench-never', 'setInterval(() => {}, 1000)')}")),
                ("exits at once", ("deploy.py", "--data",
                                   f"app_version={variant(good, 'bench-exit', 'process.exit(3)')}")),
                ("tasks/rollback.py", ("tasks/rollback.py",)),
            ]
            print(f"{'case':<20} {'exit':>4} {'requests':>8} {'failed':>6} {'writes':>6} {'failed':>6} "
                  f"{'longest gap':>11} {'VPS peak MB':>11} {'wall s':>7}")
            for name, args in cases:
                with VpsMemory(site.host) as memory, Traffic(site.base, site.token) as traffic:
                    t0 = time.monotonic()
                    out = site.pyinfra(*args)
                    wall = time.monotonic() - t0
                print(f"{name:<20} {out.returncode:>4} {traffic.requests:>8} {traffic.failures:>6} "
                      f"{traffic.writes:>6} {traffic.failed_writes:>6} {traffic.longest_gap:>10.2f}s "
                      f"{memory.peak / 2**20:>11.0f} {wall:>7.1f}")
            print(f"{default_limits()}; an unsized VPS (the whole machine): the peak is what the release used")
    finally:
        for tag in ("bench-good", "bench-never", "bench-exit"):
            subprocess.run(["docker", "rmi", "-f", f"example:{tag}"], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
