"""The alerts (vpskit-server notify, vpskit/server/notify.py), run here against a webhook receiver on 127.0.0.1:
one JSON message per failure (any cause text, quotes and all), the command's own exit status, nothing while all
is well, and the health check's alerts once per failing spell."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

PROGRAM = Path(__file__).resolve().parents[2] / "files" / "vpskit-server"


@pytest.fixture
def hook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook?token=secret-token", received
    server.shutdown()


def notify(tmp_path, url: str, *args: str, releases: str = "") -> subprocess.CompletedProcess:
    conf = tmp_path / "offsite.env"
    conf.write_text(f"export NOTIFY_URL='{url}'\nexport VPSKIT_NOTIFY_RELEASES='{releases}'\n")
    env = {"PATH": "/usr/bin:/bin", "VPSKIT_OFFSITE_CONF": str(conf), "VPSKIT_STATE": str(tmp_path / "state")}
    return subprocess.run([str(PROGRAM), "notify", "--app-dir", str(tmp_path / "example"), *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_a_failure_is_one_message_with_its_last_line_and_the_exit_status_stays(tmp_path, hook):
    url, received = hook
    out = notify(tmp_path, url, "run", "backup", "--", "sh", "-c",
                 'echo working; echo \'the "box" \\ said no\ttab\' >&2; exit 3')
    assert out.returncode == 3 and "working" in out.stdout  # the command's output kept for the journal
    assert len(received) == 1
    body = received[0]
    assert body["event"] == "backup" and body["ok"] is False and body["text"] == body["content"]
    assert body["text"].endswith('backup failed: the "box" \\ said no tab')
    assert "secret-token" not in out.stdout + out.stderr


def test_success_sends_nothing(tmp_path, hook):
    url, received = hook
    assert notify(tmp_path, url, "run", "backup", "--", "true").returncode == 0
    assert received == []


def test_health_alerts_once_per_failing_spell_and_once_when_it_passes_again(tmp_path, hook):
    url, received = hook
    runs = ["printf 'FAIL db: container exited\\nunhealthy: db\\n'; exit 1",
            "printf 'FAIL db: container running starting\\nunhealthy: db\\n'; exit 1", "echo healthy", "echo healthy"]
    codes = [notify(tmp_path, url, "run", "health", "--", "sh", "-c", r).returncode for r in runs]
    assert codes == [1, 1, 0, 0]
    assert [m["ok"] for m in received] == [False, True]
    assert "health check failed: db: container exited" in received[0]["text"]


def test_releases_only_when_asked(tmp_path, hook):
    url, received = hook
    notify(tmp_path, url, "release", "OK", "release of v2 ok after 12s")
    assert received == []
    notify(tmp_path, url, "release", "FAILED", "release of v3 failed after 40s: not ready", releases="1")
    assert len(received) == 1 and received[0]["ok"] is False and "v3 failed" in received[0]["text"]


def test_a_health_alert_the_webhook_did_not_take_is_sent_on_the_next_run(tmp_path, hook):
    """Review item 13: the webhook is down when health starts failing; the state is not kept as told, so the
    next failing run (webhook back) still alerts, once."""
    url, received = hook
    down = "http://127.0.0.1:9/hook"  # nothing listens there
    failing = "printf 'FAIL /api/health: HTTP 000\\nunhealthy: /api/health\\n'; exit 1"
    out = notify(tmp_path, down, "run", "health", "--", "sh", "-c", failing)
    assert out.returncode == 1 and "did not take the message" in out.stderr
    assert notify(tmp_path, url, "run", "health", "--", "sh", "-c", failing).returncode == 1
    assert notify(tmp_path, url, "run", "health", "--", "sh", "-c", failing).returncode == 1
    assert [m["ok"] for m in received] == [False]
    assert "health check failed: /api/health: HTTP 000" in received[0]["text"]


def test_what_happened_since_the_last_health_check_is_one_message_and_its_counters_kept_once_sent(tmp_path, hook):
    """Issue 23: a warning (an OOM kill, a restart, a service started again) is one message on the run that finds
    it; the check's new counters replace the old ones only once the webhook took it."""
    url, received = hook
    # A stand-in check: warns while its recorded counters are not yet the ones it sees (kills: 1).
    check = ('[ -n "$VPSKIT_HEALTH_REPAIR" ] || exit 9; echo "oom_kill 1" > "$VPSKIT_HEALTH_RECORD"; '
             'if grep -q "oom_kill 1" "$VPSKIT_STATE/pressure" 2>/dev/null; then echo "ok   oom: none"; '
             'else echo "warn oom: 1 OOM kill(s) since the last check"; fi; echo healthy')
    out = notify(tmp_path, "http://127.0.0.1:9/hook", "run", "health", "--", "bash", "-c", check)
    assert out.returncode == 0 and "did not take the message" in out.stderr
    assert not (tmp_path / "state" / "pressure").exists()  # not sent: the next run says it again
    assert notify(tmp_path, url, "run", "health", "--", "bash", "-c", check).returncode == 0
    assert notify(tmp_path, url, "run", "health", "--", "bash", "-c", check).returncode == 0
    assert [(m["ok"], m["text"].split(": ", 1)[1]) for m in received] == [
        (False, "health check: oom: 1 OOM kill(s) since the last check")]
