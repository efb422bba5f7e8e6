"""Backup of a database of at least 1 GB: wall time, throughput against a plain `pg_dump > /dev/null` in the
same run, and the peak memory of the backup's processes on the VPS (target: under 100 MB).

    .venv/bin/python bench/backup.py [--gb 1.1]

Starts a fresh test-bed VPS, deploys example/ (the image comes from the local cache or is built), fills a
table until the database passes the size, then measures. Removes the VPS after.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from common import deployed_vps, fill_database

# RSS of everything the backup runs on the VPS: the server program, docker CLIs, pg_dump and tar (in containers).
SAMPLE = ("ps -eo rss=,comm= | awk '$2 ~ /^(vpskit-server|python3|docker|docker-compose|pg_dump|pg_restore|tar|"
          "sha256sum)$/ {s += $1} END {print s + 0}'")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.1)
    args = parser.parse_args()
    with deployed_vps("backup", db_memory_limit="1g") as (host, run):
        t0 = time.monotonic()
        size = fill_database(host, args.gb * 1024)
        print(f"database: {size / 1e9:.2f} GB (filled in {time.monotonic() - t0:.0f}s)")

        t0 = time.monotonic()
        host.ssh("cd /opt/example && sudo docker compose exec -T db sh -c "
                 "'pg_dump -Fc -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"' > /dev/null", timeout=1800)
        plain = time.monotonic() - t0

        peak, stop = [0], threading.Event()

        def sample():
            while not stop.is_set():
                out = host.ssh(SAMPLE, check=False, timeout=30).stdout.strip()
                peak[0] = max(peak[0], int(out or 0))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            wall = run("tasks/backup.py")
        finally:
            stop.set()
            sampler.join()
        name = host.ssh("sudo ls -1 /var/backups/example").stdout.split()[-1]
        dump = int(host.ssh(f"sudo stat -c %s /var/backups/example/{name}/db.dump").stdout)
    print(f"plain pg_dump -Fc > /dev/null: {plain:.1f}s ({size / plain / 1e6:.0f} MB/s of database)")
    print(f"vpskit backup (pyinfra run, dump + verify + media + checksums): {wall:.1f}s "
          f"({size / wall / 1e6:.0f} MB/s of database); dump file {dump / 1e6:.0f} MB")
    print(f"ratio backup / plain dump: {wall / plain:.2f}x")
    print(f"peak RSS of the backup's processes on the VPS: {peak[0] / 1024:.0f} MB (target: under 100 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
