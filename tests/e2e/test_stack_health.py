"""The server program's wait for a healthy stack (vpskit-server stack wait) with real `docker compose`: a project
whose services are all switched off has no service, and no service is not healthy (the wait fails instead of
passing at once)."""

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_wait_for_a_stack_without_services_fails(testbed, tmp_path):
    (tmp_path / "docker-compose.yml").write_text(
        "name: vpskit-nothing\nservices:\n  x:\n    image: postgres:17\n    profiles: [never]\n")
    out = subprocess.run([str(ROOT / "files" / "vpskit-server"), "stack", "wait", "--app-dir", str(tmp_path),
                          "--seconds", "4", "--label", "test"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "vpskit test: not healthy after 4s: no services" in out.stderr
