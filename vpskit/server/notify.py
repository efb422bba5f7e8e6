"""vpskit's alerts (the backup, drill and health timers' units, and releases): a command run so that its failure
sends one message to the webhook in NOTIFY_URL, and one message per release when notify_releases is set.

The URL is read from the app's root-only /etc/vpskit/<app>/offsite.env and never printed. The body is JSON with
the text under "text" (Slack, Mattermost, ntfy's JSON) and "content" (Discord), plus app, host, event and ok.
The scheduled health check alerts once when it starts failing (and once when it recovers), not every run; what
it warns of (an OOM kill, a restart, a service started again) is one message on the run that finds it, and its
counters are kept only once the webhook took that message.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .healthcheck import offsite_value


def clean(text: str) -> str:
    """One line: newlines and tabs become spaces, other control characters go."""
    text = text.translate({9: " ", 10: " ", 13: " "})
    return "".join(ch for ch in text if ord(ch) >= 32 and ord(ch) != 127)


def body(app: str, host: str, event: str, ok: bool, text: str) -> bytes:
    said = clean(f"vpskit {app} on {host}: {text}")
    return json.dumps({"text": said, "content": said, "app": app, "host": host, "event": event, "ok": ok}).encode()


def cause_of(output: str) -> tuple[str, str]:
    """(why a command failed, what it warned of): its FAIL lines (else its last line), and its warn lines."""
    lines = output.splitlines()
    fails = [line[4:].strip() for line in lines if line.startswith("FAIL")]
    warns = [line[4:].strip() for line in lines if line.startswith("warn")]
    last = next((line for line in reversed(lines) if line.strip()), "")
    return "; ".join(fails) or last, "; ".join(warns)


class Notify:
    def __init__(self, app_dir: Path):
        self.app = app_dir.name
        self.url = offsite_value(self.app, "NOTIFY_URL")
        self.releases = offsite_value(self.app, "VPSKIT_NOTIFY_RELEASES") == "1"
        self.state = Path(os.environ.get("VPSKIT_STATE", f"/var/lib/vpskit/{self.app}"))

    def send(self, event: str, ok: bool, text: str) -> bool:
        """False when the webhook did not take it (said on stderr, without the URL)."""
        if not self.url:
            return True
        data = body(self.app, socket.gethostname(), event, ok, text)
        for _ in range(3 if self.url.startswith(("http://", "https://")) else 0):
            try:
                req = urllib.request.Request(self.url, data=data,  # noqa: S310 - http(s) only, checked above
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=20) as answer:  # noqa: S310 - the operator's webhook
                    if answer.status < 400:
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
        print(f"vpskit notify: the webhook (NOTIFY_URL) did not take the message: {clean(text)}", file=sys.stderr)
        return False

    def run(self, event: str, command: list[str]) -> int:
        env = dict(os.environ)
        if event == "health":  # the scheduled check records its counters and starts a service found stopped
            self.state.mkdir(parents=True, exist_ok=True)
            env.update(VPSKIT_HEALTH_RECORD=str(self.state / "pressure.new"), VPSKIT_HEALTH_REPAIR="1")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                errors="replace")
        out = []
        for line in proc.stdout or ():  # kept for the journal as it comes
            out.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()
        rc = proc.wait()
        cause, warned = cause_of("".join(out))
        if event == "health":
            sent = not warned or self.send("health", False, f"health check: {warned}")
            if sent:
                (self.state / "pressure.new").exists() and (self.state / "pressure.new").replace(
                    self.state / "pressure")
            # Once per change of state; the new state is kept only once the message went out.
            before_path = self.state / "health"
            before = before_path.read_text().strip() if before_path.exists() else "ok"
            now = "ok" if rc == 0 else "failing"
            if now != before:
                sent = self.send("health", True, "health check passes again") if rc == 0 else \
                    self.send("health", False, f"health check failed: {cause}")
                if sent:
                    before_path.write_text(f"{now}\n")
        elif rc != 0:
            self.send(event, False, f"{event} failed: {cause}")
        return rc

    def release(self, ok: bool, text: str) -> int:
        if self.releases:
            self.send("release", ok, text or "release")
        return 0


def main(argv: list[str]) -> int:
    """notify --app-dir D run EVENT -- COMMAND... | notify --app-dir D release OK|FAILED TEXT"""
    if len(argv) >= 4 and argv[0] == "--app-dir":
        n = Notify(Path(argv[1]))
        if argv[2] == "run" and len(argv) >= 6 and argv[4] == "--":
            return n.run(argv[3], argv[5:])
        if argv[2] == "release" and argv[3] in ("OK", "FAILED"):
            return n.release(argv[3] == "OK", " ".join(argv[4:]))
    print("usage: vpskit-server notify --app-dir D run EVENT -- COMMAND... | notify --app-dir D release OK|FAILED "
          "TEXT", file=sys.stderr)
    return 2
