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
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import example_version_or_exit  # noqa: E402

from tests.support import Traffic, free_port, http, jpeg, multipart, wait_until  # noqa: E402
from tests.testbed import vps as testbed  # noqa: E402

CGROUP = Path("/sys/fs/cgroup/memory/docker")  # cgroup v1 here; a sized VPS's containers are nested below it
PSQL = "cd /opt/example && sudo docker compose exec -T db psql -U payload -d payload -Atc"


def used(cgroup: Path) -> int:
    """Memory in use minus the page cache that can be dropped at once (what `docker stats` shows)."""
    usage = int((cgroup / "memory.usage_in_bytes").read_text())
    stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
    return usage - int(stat.get("total_inactive_file", 0))


class Peak:
    """Samples the whole VPS's memory every 0.2 s and keeps the peak."""

    def __init__(self, cgroup: Path):
        self.cgroup, self.peak, self._stop = cgroup, 0, threading.Event()

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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fill-mb", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    good = example_version_or_exit()
    host = testbed.start(f"vpskit-bench-small-{os.getpid()}", session="bench", memory="1g", cpus="1")
    vps_cgroup = CGROUP / testbed.docker("inspect", "-f", "{{.Id}}", host.name).stdout.strip()
    tunnel = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env_file = Path(tmp) / ".env"
            env_file.write_text("POSTGRES_PASSWORD=bench-password\nPAYLOAD_SECRET=" + "b" * 40 + "\n")
            env = {**os.environ, **host.env(), "VPSKIT_ENV_FILE": str(env_file), "VPSKIT_IMAGE_TRANSPORT": "ssh",
                   "VPSKIT_BACKUP_BEFORE_UPDATE": "false", "VPSKIT_HEALTH_SCHEDULE": ""}

            def pyinfra(*argv: str) -> subprocess.CompletedProcess:
                return subprocess.run([str(ROOT / ".venv/bin/pyinfra"), "-y", "inventory.py", *argv], cwd=ROOT,
                                      env=env, capture_output=True, text=True)

            first = pyinfra("deploy.py")
            if first.returncode != 0:
                sys.exit(first.stdout[-3000:])
            local = free_port()
            base = f"http://127.0.0.1:{local}"
            tunnel = host.forward(3000, local)
            wait_until(lambda: http("GET", f"{base}/api/health/ready", timeout=3).status == 200, 60, "the tunnel")
            creds = {"email": "bench@example.com", "password": "a long enough password"}
            http("POST", f"{base}/api/users/first-register", creds)
            token = http("POST", f"{base}/api/users/login", creds).json()["token"]
            rows = args.fill_mb * 1024
            host.ssh(f"{PSQL} \"create table filler (id int, body text); insert into filler select g, "  # noqa: S608
                     f"(select string_agg(md5(random()::text || g || i), '') from generate_series(1, 32) i) "
                     f"from generate_series(1, {rows}) g\"", timeout=3600)
            db_mb = int(host.ssh(f"{PSQL} 'select pg_database_size(current_database())'").stdout) / 2**20
            time.sleep(10)  # let the fill's work settle before the idle figures

            stats = host.exec("docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}").stdout
            print(f"1 GB / 1 CPU test VPS, example app, database {db_mb:.0f} MB; limits app 448m (x2 during a "
                  "release), db 256m, proxy 64m")
            print("\nidle memory")
            units = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "B": 1 / 2**20}
            containers = 0.0
            for line in stats.splitlines():
                name, usage = line.split()[0], line.split()[1]
                number = usage.rstrip("KMGiB")
                mb = float(number) * units[usage[len(number):]]
                containers += mb
                print(f"  {name:<28} {mb:>6.0f} MB")
            whole = used(vps_cgroup) / 2**20
            print(f"  {'system, dockerd, containerd':<28} {whole - containers:>6.0f} MB")
            print(f"  {'whole VPS':<28} {whole:>6.0f} MB of 1024")

            print("\nlatency (ms)           p50 idle  p99 idle  p50 backup  p99 backup  p99 ratio")
            for path in ("/", "/api/health/ready"):
                start = time.monotonic()
                idle = latencies(base, path, lambda s=start: time.monotonic() - s > args.seconds)
                done = threading.Event()
                backup: list[subprocess.CompletedProcess] = []
                worker = threading.Thread(target=lambda b=backup, d=done: (b.append(pyinfra("tasks/backup.py")),
                                                                         d.set()))
                t0 = time.monotonic()
                worker.start()
                during = latencies(base, path, done.is_set)
                worker.join()
                took = time.monotonic() - t0
                if backup[0].returncode != 0:
                    sys.exit(backup[0].stdout[-3000:])
                print(f"  {path:<20} {p(idle, 50):>9.0f} {p(idle, 99):>9.0f} {p(during, 50):>11.0f} "
                      f"{p(during, 99):>11.0f} {p(during, 99) / p(idle, 99):>9.2f}x   "
                      f"({len(idle)} and {len(during)} requests; backup {took:.0f}s)")

            kills_before = int(host.exec("awk", '$1 == "oom_kill" {print $2}', "/proc/vmstat").stdout)
            tag = "bench-small-v2"
            subprocess.run(["docker", "tag", f"example:{good}", f"example:{tag}"], check=True)
            upload: list[str] = []

            def send_upload():
                time.sleep(5)  # the release is under way: the new container is starting
                body, ctype = multipart({"_payload": '{"alt": "a 20 MB photo"}'},
                                        {"file": ("photo.jpg", jpeg(20 * 10**6), "image/jpeg")})
                t0 = time.monotonic()
                try:
                    answer = http("POST", f"{base}/api/media", body, {"Content-Type": ctype,
                                                                      "Authorization": f"JWT {token}"}, timeout=120)
                    upload.append(f"{answer.status} in {time.monotonic() - t0:.1f}s")
                except OSError as err:
                    upload.append(f"no answer ({err}) after {time.monotonic() - t0:.1f}s")

            uploader = threading.Thread(target=send_upload)
            with Peak(vps_cgroup) as peak, Traffic(base, token) as traffic:
                uploader.start()
                t0 = time.monotonic()
                out = pyinfra("deploy.py", "--data", f"app_version={tag}")
                wall = time.monotonic() - t0
                uploader.join()
            kills = int(host.exec("awk", '$1 == "oom_kill" {print $2}', "/proc/vmstat").stdout) - kills_before
            print(f"\na good release (exit {out.returncode}, {wall:.0f}s) under traffic: {traffic.summary()}")
            print(f"  20 MB JPEG uploaded to /api/media during it: {upload[0]}")
            print(f"  whole VPS peak: {peak.peak / 2**20:.0f} MB of 1024; OOM kills on the machine meanwhile: {kills}")
            subprocess.run(["docker", "rmi", f"example:{tag}"], capture_output=True)
    finally:
        if tunnel:
            tunnel.terminate()
        testbed.remove(host.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
