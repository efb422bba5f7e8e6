"""tasks/stop.py's command (review item 14), run here with sh against a folder standing in for the app's, and a
stand-in `docker`: it says what was serving and what it did, and fails with compose's own status when compose
fails (it used to exit 0 whatever happened, behind the pipe that tidies compose's output)."""

from __future__ import annotations

import subprocess

from vpskit import commands

DOCKER = """#!/bin/sh
case "$*" in
  "compose ps -q app") echo c1 ;;
  "inspect -f {{.Config.Image}} c1") echo example:v7 ;;
  "compose stop") echo " Container example-app-1  Stopping"; echo "$STUB_SAYS"; exit "$STUB_EXIT" ;;
esac
"""


def stop(tmp_path, says: str, status: int) -> subprocess.CompletedProcess:
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "bin" / "docker").write_text(DOCKER)
    (tmp_path / "bin" / "docker").chmod(0o755)
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    line = commands.stop(str(app), "example", 5, ("stop",), "containers stopped, data volumes kept")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "STUB_SAYS": says, "STUB_EXIT": str(status)}
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env, timeout=30)


def test_a_stop_says_what_it_stopped(tmp_path):
    out = stop(tmp_path, " Container example-app-1  Stopped", 0)
    assert out.returncode == 0, out.stderr
    assert " Stopping" not in out.stdout and "Container example-app-1  Stopped" in out.stdout
    assert out.stdout.strip().endswith("vpskit stop: example was serving example:v7; now containers stopped, data "
                                       "volumes kept; start it again with: pyinfra inventory.py deploy.py")


def test_a_stop_that_compose_fails_fails_with_its_status_and_output(tmp_path):
    out = stop(tmp_path, "Error response from daemon: cannot stop container: permission denied", 3)
    assert out.returncode == 3
    assert "Error response from daemon: cannot stop container: permission denied" in out.stdout
    assert "vpskit stop: docker compose stop failed (exit 3, its output above)" in out.stderr
    assert "now containers stopped" not in out.stdout


def test_nothing_deployed_is_said(tmp_path):
    line = commands.stop(str(tmp_path / "none"), "example", 5, ("stop",), "stopped")
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and f"nothing deployed at {tmp_path / 'none'}" in out.stdout
