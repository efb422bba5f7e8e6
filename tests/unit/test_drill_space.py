"""files/drill.sh checks for room before it restores anything (review item 12): run here with bash, with stand-in
`docker`, `psql` and `df` commands on PATH (a live database of 3 GB, a disk with 100 MB free), against a real
backup folder. The drill stops with one line; no scratch database is created."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

DRILL = Path(__file__).resolve().parents[2] / "files" / "drill.sh"

DOCKER = """#!/bin/bash
echo "docker $*" >> "$STUB_LOG"
case "$1 $2" in
  "compose ps") echo c0ffee ;;
  "compose exec") shift 4; POSTGRES_USER=payload POSTGRES_DB=payload exec "$@" ;;
  "info -f") echo "$STUB_DATA" ;;
esac
"""
PSQL = """#!/bin/bash
echo "psql $*" >> "$STUB_LOG"
case "$*" in *pg_database_size*) echo 3000000000 ;; esac
"""
DF = """#!/bin/bash
echo "Filesystem 1024-blocks Used Available Capacity Mounted on"
echo "/dev/small 1000 900 $STUB_FREE 90% /"
"""


def stub(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)
    (folder / name).chmod(0o755)


def test_a_drill_without_room_for_its_scratch_copies_stops_before_restoring(tmp_path):
    bin_dir, app, root, data = tmp_path / "bin", tmp_path / "app", tmp_path / "backups", tmp_path / "docker"
    for d in (bin_dir, app, data):
        d.mkdir()
    (app / ".env").write_text('POSTGRES_USER="payload"\n')
    backup = root / "20261205T031500Z"
    backup.mkdir(parents=True)
    files = {"db.dump": b"PGDMP fake", "media.tar": os.urandom(4096), "media.sha256": b""}
    for name, data_bytes in files.items():
        (backup / name).write_bytes(data_bytes)
    (backup / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in files.items()))
    (backup / "manifest.json").write_text('{"tables": {\n    "public.posts": 3\n  }}\n')
    stub(bin_dir, "docker", DOCKER)
    stub(bin_dir, "psql", PSQL)
    stub(bin_dir, "df", DF)
    log = tmp_path / "calls"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(log), "STUB_DATA": str(data), "STUB_FREE": "100"}
    out = subprocess.run(["bash", str(DRILL), str(app), str(root), "latest", "local"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 1
    need = int(3000000000 * 1.2 / 1048576 + 1) + int(4096 * 1.2 / 1048576 + 1)
    assert (f"not enough disk space for the drill: 100 MB free in {root} and {data} (one disk), its scratch "
            f"copies need about {need} MB") in out.stderr, out.stderr
    assert "nothing was restored" in out.stderr
    assert "CREATE DATABASE" not in log.read_text()

    # With room, the same drill goes on to restore into its scratch database.
    env["STUB_FREE"] = "900000"
    out = subprocess.run(["bash", str(DRILL), str(app), str(root), "latest", "local"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert "not enough disk space" not in out.stderr
    assert "CREATE DATABASE" in log.read_text()
