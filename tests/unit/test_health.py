"""One definition of healthy: vpskit/server/health.py (the deploy's own check) and files/common.sh (release,
restore and health check on the server) agree on every container state, and no service is not healthy."""

import itertools
import subprocess
from pathlib import Path

from vpskit.server import health

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


DOCKER = """#!/bin/bash
case "$*" in
  "compose config --services") echo app ;;
  "compose ps -a -q app") echo c1 ;;
  inspect*) echo running/healthy ;;
esac
"""


def test_the_health_check_asks_the_app_where_the_proxy_publishes_it(tmp_path):
    """Review item 13: publish_host set to one of the server's addresses (a private one): the check asks there,
    not on the loopback, where nothing is published (every check failed, which pushed users to 0.0.0.0). Run
    here with bash: a stand-in `docker`, and the app's two routes answered on 127.0.0.2."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from vpskit import settings, tasks

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"ok":true}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.2", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").write_text(DOCKER)
    (tmp_path / "bin" / "docker").chmod(0o755)
    s = tasks.paths(settings.load({"publish_host": "127.0.0.2", "publish_port": port}))
    where = tasks.health_command(s).split()[3]
    assert where == f"127.0.0.2:{port}"
    assert tasks.health_command(tasks.paths(settings.load({"publish_host": "0.0.0.0"}))).split()[3] == "3000"
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    try:
        out = subprocess.run(["bash", str(ROOT / "files" / "health-check.sh"), str(tmp_path), str(tmp_path / "b"),
                              where], capture_output=True, text=True, env=env, timeout=60)
    finally:
        server.shutdown()
    assert "ok   /api/health: 200" in out.stdout and "ok   /api/health/ready: 200" in out.stdout, out.stdout
