"""The release's one run of the migration runner (files/common.sh run_migrations), run here with bash and a
stand-in `docker` (review item 14): a runner that compose cannot even create reports compose's exit status and
its message (it used to report exit 0: `if ! x=$(...); then STATUS=$?` reads the negation's status)."""

from __future__ import annotations

import subprocess
from pathlib import Path

COMMON = Path(__file__).resolve().parents[2] / "files" / "common.sh"

DOCKER = """#!/bin/bash
case "$*" in
  "compose run -d migrate")
    if [ "$STUB_CREATE" = fail ]; then echo "no such image: example-migrate:v2" >&2; exit 18; fi
    echo runner1 ;;
  "inspect -f {{.State.Status}} runner1") echo exited ;;
  "logs -f runner1"|"logs runner1") echo "Migrated: 20261129_000000_initial" ;;
  "wait runner1") echo 3 ;;
esac
"""


def run(tmp_path, create: str) -> subprocess.CompletedProcess:
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "bin" / "docker").write_text(DOCKER)
    (tmp_path / "bin" / "docker").chmod(0o755)
    script = f'. "{COMMON}"; run_migrations "{tmp_path}/out"; echo "STATUS=$STATUS"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "STUB_CREATE": create})


def test_a_runner_compose_cannot_create_reports_its_status_and_message(tmp_path):
    out = run(tmp_path, "fail")
    assert "STATUS=18" in out.stdout
    assert "no such image: example-migrate:v2" in out.stderr


def test_a_runner_that_ran_reports_its_own_exit_status_and_output(tmp_path):
    out = run(tmp_path, "ok")
    assert "STATUS=3" in out.stdout and "Migrated: 20261129_000000_initial" in (tmp_path / "out").read_text()
