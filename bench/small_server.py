"""The target server (issue 23): figures on a test VPS sized like it, 1 GB of memory and 1 CPU for everything
it runs (systemd, sshd, dockerd and every container; no swap: a container-based VPS cannot have its own).

    .venv/bin/python bench/small_server.py [--fill-mb 150] [--seconds 30]

Starts a fresh sized VPS, deploys example/ with the defaults (the first deploy sets the server baseline),
fills the database (so that a backup takes a while), then prints one table:
- idle memory of each container, of the rest of the VPS (system, dockerd, containerd), and of the whole VPS;
- p50/p99 of the home page and of /api/health/ready, idle and while tasks/backup.py runs (goal: p99 during the
  backup at most 1.5x idle);
- a good release under a probe (~25 GET/s) and a writer (POST every 250 ms) while a 20 MB JPEG is uploaded
  through Payload's media collection: failures, the upload's answer, the whole VPS's peak, OOM kills.
Removes the VPS after. Needs the example image on this machine (`make test` or a deploy builds it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import CGROUP, default_limits, deployed_site, example_version_or_exit, fill_database, used

from tests.support import Traffic, http, jpeg, multipart, wait_until
from tests.testbed import vps as testbed


def processes(cgroup: Path) -> int:
    """Memory the VPS's processes hold (every container's included): in use and shared, no page cache."""
    stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
    return int(stat["total_rss"]) + int(stat["total_shmem"])


class Peak:
    """Samples the whole VPS's memory every 0.2 s and keeps the peaks: `peak` as `docker stats` counts (in use
    and the page cache in active use), `processes` without any page cache."""

    def __init__(self, cgroup: Path):
        self.cgroup, self.peak, self.processes, self._stop = cgroup, 0, 0, threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, used(self.cgroup))
            self.processes = max(self.processes, processes(self.cgroup))
            time.sleep(0.2)


def latencies(base: str, path: str, until) -> list[float]:
    """GET `path` about 10 times a second until `until()` is true; the time of each answer (failures: inf)."""
    times = []
    while not until():
        t0 = time.monotonic()
        try:
            ok = http("GET", base + path, timeout=10).status == 200
        except OSError:
            ok = False
        times.append(time.monotonic() - t0 if ok else float("inf"))
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
    return times


def p(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[q - 1] * 1000 if len(times) > 1 else float("nan")


def idle_memory(site, vps_cgroup) -> None:
    stats = site.host.exec("docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}").stdout
    print("\nidle memory")
    units = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "B": 1 / 2**20}
    containers = 0.0
    for line in stats.splitlines():
        name, usage = line.split()[0], line.split()[1]
        number = usage.rstrip("KMGiB")
        mb = float(number) * units[usage[len(number):]]
        containers += mb
        print(f"  {name:<28} {mb:>6.0f} MB")
    stat = dict(line.split() for line in (vps_cgroup / "memory.stat").read_text().splitlines())
    cache = (int(stat["total_cache"]) - int(stat["total_shmem"])) / 2**20
    print(f"  {'containers (docker stats)':<28} {containers:>6.0f} MB")
    print(f"  {'whole VPS: processes':<28} {processes(vps_cgroup) / 2**20:>6.0f} MB (containers, systemd, sshd, "
          "dockerd, containerd: memory in use and shared memory)")
    print(f"  {'whole VPS: page cache':<28} {cache:>6.0f} MB (files read and written; the kernel drops it as "
          "memory is needed)")


def latency_idle_and_during_backup(site, seconds: float) -> None:
    print("\nlatency (ms)           p50 idle  p99 idle  p50 backup  p99 backup  p99 ratio")
    for path in ("/", "/api/health/ready"):
        start = time.monotonic()
        idle = latencies(site.base, path, lambda s=start: time.monotonic() - s > seconds)
        done = threading.Event()
        backup: list[subprocess.CompletedProcess] = []
        worker = threading.Thread(target=lambda b=backup, d=done: (b.append(site.pyinfra("tasks/backup.py")),
                                                                 d.set()))
        t0 = time.monotonic()
        worker.start()
        during = latencies(site.base, path, done.is_set)
        worker.join()
        took = time.monotonic() - t0
        if backup[0].returncode != 0:
            sys.exit(f"tasks/backup.py failed:\n{backup[0].stdout[-3000:]}{backup[0].stderr[-3000:]}")
        print(f"  {path:<20} {p(idle, 50):>9.0f} {p(idle, 99):>9.0f} {p(during, 50):>11.0f} "
              f"{p(during, 99):>11.0f} {p(during, 99) / p(idle, 99):>9.2f}x   "
              f"({len(idle)} and {len(during)} requests; backup {took:.0f}s)")


def release_with_upload(site, vps_cgroup, good: str) -> None:
    kills_before = int(site.host.exec("awk", '$1 == "oom_kill" {print $2}', "/proc/vmstat").stdout)
    tag = "bench-small-v2"
    subprocess.run(["docker", "tag", f"example:{good}", f"example:{tag}"], check=True)
    upload: list[str] = []

    released = threading.Event()

    def two_app_containers() -> bool:
        ps = site.host.exec("sh", "-c", "cd /opt/example && docker compose ps -q app | wc -l", check=False)
        return released.is_set() or ps.stdout.strip() == "2"

    def send_upload():
        wait_until(two_app_containers, 600, "the release's second app container")
        if released.is_set():
            upload.append("not sent: the release ended before its second app container was seen")
            return
        body, ctype = multipart({"_payload": '{"alt": "a 20 MB photo"}'},
                                {"file": ("photo.jpg", jpeg(20 * 10**6), "image/jpeg")})
        t0 = time.monotonic()
        try:
            answer = http("POST", f"{site.base}/api/media", body, {"Content-Type": ctype,
                                                                   "Authorization": f"JWT {site.token}"}, timeout=120)
            upload.append(f"{answer.status} in {time.monotonic() - t0:.1f}s")
        except OSError as err:
            upload.append(f"no answer ({err}) after {time.monotonic() - t0:.1f}s")

    uploader = threading.Thread(target=send_upload)
    try:
        with Peak(vps_cgroup) as peak, Traffic(site.base, site.token) as traffic:
            uploader.start()
            t0 = time.monotonic()
            out = site.pyinfra("deploy.py", "--data", f"app_version={tag}")
            wall = time.monotonic() - t0
            released.set()
            uploader.join()
    finally:
        subprocess.run(["docker", "rmi", f"example:{tag}"], capture_output=True)
    kills = int(site.host.exec("awk", '$1 == "oom_kill" {print $2}', "/proc/vmstat").stdout) - kills_before
    print(f"\na good release (exit {out.returncode}, {wall:.0f}s) under traffic: {traffic.summary()}")
    print(f"  20 MB JPEG uploaded to /api/media during it: {upload[0]}")
    print(f"  whole VPS peak: processes {peak.processes / 2**20:.0f} MB; with the page cache in active use (as "
          f"docker stats counts) {peak.peak / 2**20:.0f} MB of 1024; OOM kills on the machine meanwhile: {kills}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fill-mb", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--latency-only", action="store_true", help="only the latency idle and during a backup")
    args = parser.parse_args()
    good = example_version_or_exit()
    with deployed_site("small", memory="1g", backup_before_update="false", health_schedule="") as site:
        vps_cgroup = CGROUP / testbed.docker("inspect", "-f", "{{.Id}}", site.host.name).stdout.strip()
        db_mb = fill_database(site.host, args.fill_mb) / 2**20
        time.sleep(10)  # let the fill's writes settle before the idle figures
        print(f"1 GB / 1 CPU test VPS, example app, database {db_mb:.0f} MB; {default_limits()}")
        if not args.latency_only:
            idle_memory(site, vps_cgroup)
        latency_idle_and_during_backup(site, args.seconds)
        if not args.latency_only:
            release_with_upload(site, vps_cgroup, good)
    return 0


if __name__ == "__main__":
    sys.exit(main())
