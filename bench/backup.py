"""Backup of a database of at least 1 GB: wall time, throughput against a plain `pg_dump > /dev/null` in the
same run, and the peak memory of the backup's processes on the VPS (target: under 100 MB).

    .venv/bin/python bench/backup.py [--gb 1.1]

Starts a fresh test-bed VPS, deploys example/ (the image comes from the local cache or is built), fills a
table until the database passes the size, then measures. Removes the VPS after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.testbed import vps as testbed  # noqa: E402

PSQL = "cd /opt/example && sudo docker compose exec -T db psql -U payload -d payload -Atc"
# RSS of everything the backup runs on the VPS: the script, docker CLIs, pg_dump and tar (in containers).
SAMPLE = ("ps -eo rss=,comm= | awk '$2 ~ /^(backup.sh|docker|docker-compose|pg_dump|pg_restore|tar|sha256sum)$/ "
          "{s += $1} END {print s + 0}'")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.1)
    args = parser.parse_args()
    host = testbed.start(f"vpskit-bench-backup-{os.getpid()}", session="bench")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env_file = Path(tmp) / ".env"
            env_file.write_text("POSTGRES_PASSWORD=bench-password\nPAYLOAD_SECRET=" + "b" * 40 + "\n")
            env = {**os.environ, **host.env(), "VPSKIT_ENV_FILE": str(env_file), "VPSKIT_IMAGE_TRANSPORT": "ssh",
                   "VPSKIT_DB_MEMORY_LIMIT": "1g"}
            deploy = subprocess.run([str(ROOT / ".venv/bin/pyinfra"), "-y", "inventory.py", "deploy.py"], cwd=ROOT,
                                    env=env, capture_output=True, text=True)
            if deploy.returncode != 0:
                sys.exit(deploy.stdout[-3000:] + deploy.stderr[-3000:])
            rows = int(args.gb * 1024 * 1024 * 1.05)  # rows of ~1 KiB
            t0 = time.monotonic()
            # Random hex, so neither TOAST nor pg_dump's compression makes the data unrealistically small.
            host.ssh(f"{PSQL} \"create table filler (id int, body text); insert into filler select g, "  # noqa: S608
                     f"(select string_agg(md5(random()::text || g || i), '') from generate_series(1, 32) i) "
                     f"from generate_series(1, {rows}) g\"", timeout=3600)
            size = int(host.ssh(f"{PSQL} 'select pg_database_size(current_database())'").stdout.strip())
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
            t0 = time.monotonic()
            backup = subprocess.run([str(ROOT / ".venv/bin/pyinfra"), "-y", "inventory.py", "tasks/backup.py"],
                                    cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.monotonic() - t0
            stop.set()
            sampler.join()
            if backup.returncode != 0:
                sys.exit(backup.stdout[-3000:])
            name = host.ssh("sudo ls -1 /var/backups/example").stdout.split()[-1]
            dump = int(host.ssh(f"sudo stat -c %s /var/backups/example/{name}/db.dump").stdout)
        print(f"plain pg_dump -Fc > /dev/null: {plain:.1f}s ({size / plain / 1e6:.0f} MB/s of database)")
        print(f"vpskit backup (pyinfra run, dump + verify + media + checksums): {wall:.1f}s "
              f"({size / wall / 1e6:.0f} MB/s of database); dump file {dump / 1e6:.0f} MB")
        print(f"ratio backup / plain dump: {wall / plain:.2f}x")
        print(f"peak RSS of the backup's processes on the VPS: {peak[0] / 1024:.0f} MB (target: under 100 MB)")
    finally:
        testbed.remove(host.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
