"""One definition of healthy: vpskit/health.py (the deploy's own check) and files/common.sh (release,
restore and health check on the server) agree on every container state, and no service is not healthy."""

import itertools
import subprocess
from pathlib import Path

from vpskit import health

ROOT = Path(__file__).resolve().parents[2]
STATUSES = ["created", "running", "restarting", "paused", "exited", "dead", "removing", "missing"]
HEALTHS = ["healthy", "unhealthy", "starting", "none"]


def shell_verdicts() -> dict[tuple[str, str], bool]:
    pairs = list(itertools.product(STATUSES, HEALTHS))
    script = f". {ROOT / 'files' / 'common.sh'}\n" + "".join(
        f"if is_healthy {s}/{h}; then echo {s} {h} yes; else echo {s} {h} no; fi\n" for s, h in pairs)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, timeout=30).stdout
    return {(s, h): verdict == "yes" for s, h, verdict in (line.split() for line in out.splitlines())}


def test_shell_and_python_agree_on_every_state():
    verdicts = shell_verdicts()
    assert len(verdicts) == len(STATUSES) * len(HEALTHS)
    assert verdicts == {(s, h): health.service_healthy(s, h) for s, h in verdicts}
    assert {k for k, v in verdicts.items() if v} == {("running", "healthy"), ("running", "none")}


def test_a_stack_without_services_is_not_healthy():
    assert not health.stack_healthy({})
    assert health.stack_healthy({"app": {"state": "running", "health": "healthy"}})
    assert not health.stack_healthy({"app": {"state": "running", "health": "healthy"},
                                     "db": {"state": "running", "health": "starting"}})
