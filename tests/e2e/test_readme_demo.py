"""README command one: `make demo` on this machine ends with the example site answering at the printed
URL, a second `make demo` changes nothing, and `make demo-down` removes it. Run on its own ports and name so
a demo you keep running is left alone."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import free_port, http
from tests.testbed.vps import docker

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]
ROOT = Path(__file__).resolve().parents[2]


def test_make_demo(testbed):
    name = f"vpskit-demo-test-{os.getpid()}"
    env = {**os.environ, "VPSKIT_DEMO_NAME": name, "VPSKIT_DEMO_SSH_PORT": str(free_port()),
           "VPSKIT_DEMO_HTTP_PORT": str(free_port())}
    env.pop("VPSKIT_HOST", None)
    env.pop("VPSKIT_ENV_FILE", None)
    try:
        first = subprocess.run(["make", "demo"], cwd=ROOT, env=env, text=True, capture_output=True, timeout=1500)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
        url = re.search(r"the example site answers at (http://127\.0\.0\.1:\d+)", first.stdout).group(1)
        assert url == f"http://127.0.0.1:{env['VPSKIT_DEMO_HTTP_PORT']}"
        assert http("GET", f"{url}/api/health/ready").json()["status"] == "ready"
        assert http("GET", f"{url}/admin").status == 200
        again = subprocess.run(["make", "demo"], cwd=ROOT, env=env, text=True, capture_output=True, timeout=600)
        assert again.returncode == 0
        output = again.stdout + again.stderr  # pyinfra reports on stderr
        assert re.search(r"Grand total\s+\d+\s+-\s+-\s+\d+", output), output[-2000:]
    finally:
        down = subprocess.run(["make", "demo-down"], cwd=ROOT, env=env, text=True, capture_output=True,
                              timeout=300)
    assert down.returncode == 0
    assert name not in docker("ps", "-a", "--format", "{{.Names}}").stdout
    assert not (ROOT / ".testbed" / f"{name}.env").exists()
