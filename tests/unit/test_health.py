"""One definition of healthy (vpskit/server/health.py), used by the deploy's own check, the releases and the
server scripts (through `vpskit-server stack states|wait`): every container state, no service is not healthy,
and the health check reports what the program says."""

import itertools
import subprocess
from pathlib import Path

from tests.unit.server_fakes import Container, FakeEffects, World
from vpskit.server import health, stack
from vpskit.server.docker import Docker

ROOT = Path(__file__).resolve().parents[2]
STATUSES = ["created", "running", "restarting", "paused", "exited", "dead", "removing", "missing"]
HEALTHS = ["healthy", "unhealthy", "starting", "none"]


def test_only_a_running_container_whose_check_passes_or_has_none_is_healthy():
    verdicts = {(s, h): health.service_healthy(s, h) for s, h in itertools.product(STATUSES, HEALTHS)}
    assert {k for k, v in verdicts.items() if v} == {("running", "healthy"), ("running", "none")}


def test_the_stack_states_the_scripts_read():
    w = World(containers=[Container("c1", "example-app-1", "app", health=""),
                          Container("c2", "example-db-1", "db", health="starting")])
    found = stack.states(Docker(FakeEffects(w)))
    assert [s.line() for s in found] == ["app running/none ok", "db running/starting no"]
    assert not stack.healthy(found)
    w.containers[1].health = "healthy"
    assert stack.healthy(stack.states(Docker(FakeEffects(w))))
    w.containers.pop()
    assert [s.line() for s in stack.states(Docker(FakeEffects(w)))][1] == "db missing/none no"
    assert not stack.healthy([])


def test_the_wait_ends_at_once_when_a_container_exits_and_says_which():
    w = World(containers=[Container("c1", "example-app-1", "app", status="exited", exit_code=3)])
    fx = FakeEffects(w)
    assert not stack.wait_healthy(fx, 60, "restore")
    assert w.time < 5 and "vpskit restore: app exited with code 3 after 0s; its last log lines:" in w.said


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
    command = tasks.health_command(s).split()
    where = command[command.index("--port") + 1]
    assert where == f"127.0.0.2:{port}"
    wide = tasks.health_command(tasks.paths(settings.load({"publish_host": "0.0.0.0"}))).split()
    assert wide[wide.index("--port") + 1] == "3000"
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    try:
        out = subprocess.run([str(ROOT / "files" / "vpskit-server"), "health", "--app-dir", str(tmp_path),
                              "--backups", str(tmp_path / "b"), "--port", where], capture_output=True, text=True,
                             env=env, timeout=60)
    finally:
        server.shutdown()
    assert "ok   /api/health: 200" in out.stdout and "ok   /api/health/ready: 200" in out.stdout, out.stdout
