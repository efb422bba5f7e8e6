"""The health check (vpskit-server health) on memory pressure and stopped services (issue 23), run here against a
stand-in `docker` and stand-in /proc files: what happened since the last scheduled check (OOM kills, restarts,
swap written) is a warning with its count, the counters are written only when the health timer asks, and a
service stopped outside vpskit is started again only by the timer, never after tasks/stop.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vpskit import commands

ROOT = Path(__file__).resolve().parents[2]

# One service (db), container c1; its status and restart count come from files the test sets.
DOCKER = """#!/bin/bash
D=$(dirname "$0")/..
case "$*" in
  "compose config --services"|"compose --profile tools config --services") echo db ;;
  "compose ps -a -q db"|"compose ps -a -q") echo c1 ;;
  "compose start db") echo running > "$D/status" ;;
  "compose ps -a --format {{.State}} db") cat "$D/status" ;;
  ps\\ *) ;;
  inspect\\ -f\\ \\{\\{.Id\\}\\}*) echo "c1 $(cat "$D/restarts") /example-db-1" ;;
  inspect*) echo "$(cat "$D/status")/none" ;;
esac
"""


@pytest.fixture
def server(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").write_text(DOCKER)
    (tmp_path / "bin" / "docker").chmod(0o755)
    (tmp_path / "proc").mkdir()
    (tmp_path / "app").mkdir()
    (tmp_path / "status").write_text("running\n")
    (tmp_path / "restarts").write_text("0\n")
    set_proc(tmp_path, oom_kill=3, pswpout=100, swap_used_mb=0)
    return tmp_path


def set_proc(root: Path, oom_kill: int, pswpout: int, swap_used_mb: int) -> None:
    (root / "proc" / "vmstat").write_text(f"nr_free_pages 1000\npswpout {pswpout}\noom_kill {oom_kill}\n")
    (root / "proc" / "meminfo").write_text(
        f"MemTotal: 1000000 kB\nMemAvailable: 500000 kB\nSwapTotal: 1048576 kB\n"
        f"SwapFree: {1048576 - swap_used_mb * 1024} kB\n")


def check(root: Path, record: bool = False, repair: bool = False) -> list[str]:
    env = {"PATH": f"{root / 'bin'}:/usr/bin:/bin", "VPSKIT_PROC": str(root / "proc"),
           "VPSKIT_STATE": str(root / "state")}
    if record:
        (root / "state").mkdir(exist_ok=True)
        env["VPSKIT_HEALTH_RECORD"] = str(root / "state" / "pressure")  # as the alerts keep it once sent
    if repair:
        env["VPSKIT_HEALTH_REPAIR"] = "1"
    out = subprocess.run([str(ROOT / "files" / "vpskit-server"), "health", "--app-dir", str(root / "app"), "--backups",
                          str(root / "b"), "--port", "0"],
                         capture_output=True, text=True, env=env, timeout=60)
    return out.stdout.splitlines()


def lines(out: list[str], check_name: str) -> list[str]:
    return [line for line in out if line.split(":")[0].split()[-1] == check_name]


def test_the_first_check_counts_from_the_server_start_and_warns_of_nothing(server):
    out = check(server)
    assert lines(out, "oom") == ["ok   oom: 3 OOM kill(s) since the server started (counted from the next scheduled "
                                 "check)"]
    assert not [line for line in out if line.startswith("warn")]
    assert not (server / "state").exists()  # tasks/health.py reads only


def test_an_oom_kill_and_a_restart_since_the_last_check_are_warned_once(server):
    check(server, record=True)  # the timer's check: counters kept
    set_proc(server, oom_kill=4, pswpout=100, swap_used_mb=0)
    (server / "restarts").write_text("1\n")
    out = check(server)  # tasks/health.py between two scheduled checks: sees it, keeps nothing
    assert lines(out, "oom")[0].startswith("warn oom: 1 OOM kill(s) since the last check at ")
    assert lines(out, "example-db-1")[0].startswith("warn example-db-1: Docker restarted it 1 time(s) since")
    assert lines(out, "db") == ["ok   db: running none"]  # it serves again: a warning, not a failure
    check(server, record=True)
    out = check(server)
    assert lines(out, "oom")[0].startswith("ok   oom: none since the last check")
    assert lines(out, "example-db-1") == []


def test_swap_written_since_the_last_check_is_warned_past_its_threshold(server):
    check(server, record=True)
    set_proc(server, oom_kill=3, pswpout=100 + 10 * 256, swap_used_mb=10)  # 10 MB written: said, not warned
    assert lines(check(server), "swap") == ["ok   swap: 10 MB in use of 1024 MB"]
    set_proc(server, oom_kill=3, pswpout=100 + 300 * 256, swap_used_mb=250)
    assert lines(check(server), "swap")[0].startswith("warn swap: 300 MB written to swap since the last check at ")


def test_a_service_stopped_outside_vpskit_is_started_again_by_the_timer_only(server):
    (server / "status").write_text("exited\n")
    assert lines(check(server), "db") == ["FAIL db: container exited none"]  # tasks/health.py: reads only
    assert (server / "status").read_text() == "exited\n"
    (server / "app" / ".vpskit-stopped").write_text("stop by tasks/stop.py\n")
    assert lines(check(server, repair=True), "db") == ["FAIL db: container exited none"]  # stopped on purpose
    (server / "app" / ".vpskit-stopped").unlink()
    assert lines(check(server, repair=True), "db") == ["warn db: was exited (stopped outside vpskit): started again"]
    assert (server / "status").read_text() == "running\n"


def test_a_stop_marks_the_app_stopped_on_purpose():
    command = commands.stop("/opt/example", "example", 60, ("stop",), "containers stopped")
    assert "> /opt/example/.vpskit-stopped" in command
    assert '(app_dir / ".vpskit-stopped").unlink(' in (ROOT / "vpskit" / "server" / "release.py").read_text()
