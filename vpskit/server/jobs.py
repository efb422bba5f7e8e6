"""The jobs worker of an app: one loop, on one server (the only server, or the first app server), that asks the
app container serving there to run Payload's due jobs and schedules (the route vpskit adds to the build,
templates/vpskit-jobs-route.ts), every `interval` seconds, one request at a time.

Why it cannot run a job twice: it is the only thing that asks (the app's containers do not run jobs themselves,
vpskit/jobs.py), and it never asks again before the last answer came. Why a release never cuts a job off: each
request is made holding LOCK, and a release takes LOCK before it stops the container it replaced (release.py's
drain), as do a restore, an upgrade and tasks/stop.py; the worker skips a round while someone else holds it,
and while the app is closed for maintenance. A deploy that changes its program or unit never restarts it: it ends
between two rounds, and systemd starts the new one.

Runs as the systemd service vpskit-jobs-<app> (steps.jobs_worker); `vpskit-server jobs run --app-dir D`.
What it saw last is in D/jobs.json, for tasks/health.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .database import env_value
from .effects import Effects
from .history import now_utc
from .proxy import Proxy

LOCK = ".jobs.lock"  # in the app's folder: held for each request to the app, and by whatever stops its container
STATE = "jobs.json"  # in the app's folder: the last round (Round), for tasks/health.py
PATH = "/api/vpskit-jobs"
UNITS = Path("/etc/systemd/system")
REQUEST_LIMIT = 3600  # seconds one round may take (its jobs run inside it)


def token(payload_secret: str) -> str:
    """What the route expects in x-vpskit-jobs: HMAC-SHA256 of "vpskit-jobs" keyed by the app's PAYLOAD_SECRET."""
    return hmac.new(payload_secret.encode(), b"vpskit-jobs", hashlib.sha256).hexdigest()


def unquote(value: str) -> str:
    """A value as render.dotenv_quote wrote it, back (\\\\, \\" and \\$ unescaped)."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            i += 1
        out.append(value[i])
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Round:
    """One request to the app: when, whether it answered, and what it did."""

    at: str
    ok: bool
    ran: int = 0
    failed: int = 0
    queued: int = 0
    waiting: int = 0
    oldest: str = ""  # createdAt of the oldest job not completed ("" = none)
    error: str = ""  # why the request failed (ok False), or "jobs are not enabled in the app's config"
    since: str = ""  # a failed round: when the rounds began failing (the app restarting fails one or two)

    @classmethod
    def of_answer(cls, at: str, status: int, body: str) -> Round:
        if status != 200:
            return cls(at, False, error=f"{PATH} answered {status}" + (
                " (an image built without vpskit's jobs route?)" if status == 404 else ""))
        try:
            data = json.loads(body)
        except ValueError:
            return cls(at, False, error=f"{PATH} answered 200 with no JSON")
        if not data.get("enabled"):
            return cls(at, True, error="jobs are not enabled in the app's config")
        return cls(at, True, int(data.get("ran", 0)), int(data.get("failed", 0)), int(data.get("queued", 0)),
                   int(data.get("waiting", 0)), str(data.get("oldest") or ""))

    def said(self) -> str:
        """One line for the worker's journal and tasks/health.py."""
        if not self.ok:
            return f"could not ask the app at {self.at}: {self.error}"
        if self.error:
            return self.error
        parts = [f"ran {self.ran} job(s)" + (f", {self.failed} failed" if self.failed else "")]
        if self.queued:
            parts.append(f"queued {self.queued} from schedules")
        parts.append(f"{self.waiting} waiting" + (f" (oldest since {self.oldest})" if self.waiting else ""))
        return f"{self.at}: " + "; ".join(parts)

    def worth_saying(self, before: Round | None) -> bool:
        """Said in the journal: a round that did something, and every change between working and failing."""
        return bool(self.ran or self.queued or before is None or before.ok != self.ok or before.error != self.error)


def read_state(app_dir: Path) -> Round | None:
    try:
        return Round(**json.loads((app_dir / STATE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def held(app_dir: Path, wait: bool) -> Iterator[bool]:
    """LOCK: True once held (with `wait`, as long as it takes), False when someone else holds it."""
    fd = os.open(app_dir / LOCK, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases it


class Worker:
    def __init__(self, app_dir: Path, fx: Effects, interval: float, proxy: Proxy | None = None,
                 watched: list[Path] | None = None):
        self.app_dir, self.fx, self.interval = app_dir, fx, interval
        self.proxy = proxy or Proxy(fx)
        # Its own program and unit: a deploy that changes either makes it end between two rounds, and systemd
        # starts the new one (no deploy ever waits for a job in flight to restart it).
        self.watched = watched if watched is not None else [
            *sorted(Path(__file__).parent.glob("*.py")), UNITS / f"{unit(app_dir.name)}.service"]
        self.started = self.snapshot()
        self.stopping = False
        self.last: Round | None = read_state(app_dir)
        self._address: tuple[str, str] = ("", "")  # (container, http://ip:port)

    def serving(self) -> str:
        try:
            return (self.app_dir / "releases" / ".serving").read_text().strip()
        except OSError:
            return ""

    def address(self, container: str) -> str:
        """http://IP:PORT of the container (its first network's address), looked up once per container."""
        if self._address[0] != container:
            r = self.fx.run("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
                            "{{println}}{{range .Config.Env}}{{println .}}{{end}}", container)
            words = r.out.split("\n", 1) if r.ok else ["", ""]
            ips = [w for w in words[0].split() if w[:1].isdigit()]  # none while the container restarts
            port = next((ln[5:] for ln in (words[1] if len(words) > 1 else "").splitlines()
                         if ln.startswith("PORT=")), "3000")
            if not ips:
                return ""
            self._address = (container, f"http://{ips[0]}:{port}")
        return self._address[1]

    def secret(self) -> str:
        try:
            return unquote(env_value((self.app_dir / ".env").read_text(), "PAYLOAD_SECRET"))
        except OSError:
            return ""

    def ask(self, url: str, secret: str) -> tuple[int, str]:
        req = urllib.request.Request(url + PATH, data=b"", method="POST",  # noqa: S310 - http://IP:PORT of the app
                                     headers={"x-vpskit-jobs": token(secret)})
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_LIMIT) as res:  # noqa: S310 - the app's own container
                return res.status, res.read(65536).decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, ""
        except (OSError, ValueError) as err:
            return 0, str(getattr(err, "reason", err))

    def closed(self) -> bool:
        """The app is closed for maintenance (a restore, a PostgreSQL upgrade, here or on the db server): its jobs
        wait, rather than fail against a database that is away."""
        return self.proxy.closed(self.app_dir.name)

    def round(self) -> Round | None:
        """One request, holding LOCK; None when there was nothing to ask, the app is closed for maintenance, or
        someone else holds LOCK."""
        if self.closed():
            return None
        with held(self.app_dir, wait=False) as mine:
            container = self.serving() if mine else ""  # read holding LOCK: never a container being stopped
            if not container:
                return None
            url = self.address(container)
            if not url:
                return Round(now_utc(), False, error=f"the serving container {container} has no address (stopped?)")
            status, body = self.ask(url, self.secret())
        if status == 0:
            self._address = ("", "")  # looked up again next time (the container may have been recreated)
            return Round(now_utc(), False, error=f"no answer from {container} ({body})")
        return Round.of_answer(now_utc(), status, body)

    def record(self, r: Round) -> None:
        if not r.ok:
            before = self.last
            r = replace(r, since=(before.since or before.at) if before is not None and not before.ok else r.at)
        if r.worth_saying(self.last):
            self.fx.say(f"vpskit jobs: {r.said()}")
        tmp = self.app_dir / (STATE + ".new")
        tmp.write_text(json.dumps(asdict(r)) + "\n")
        tmp.replace(self.app_dir / STATE)
        self.last = r

    def reload_pending(self) -> bool:
        """Its unit changed on disk and systemd has not read it yet (the deploy's daemon-reload comes a moment
        later): ending now would start the old unit again."""
        r = self.fx.run("systemctl", "show", f"{unit(self.app_dir.name)}.service", "-p", "NeedDaemonReload", "--value")
        return r.out.strip() == "yes"

    def snapshot(self) -> tuple[float, ...]:
        return tuple(p.stat().st_mtime if p.exists() else 0.0 for p in self.watched)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self.fx.say(f"vpskit jobs: asking the app serving in {self.app_dir} every {self.interval:g}s")
        while not self.stopping:
            r = self.round()
            if r is not None:
                self.record(r)
            if self.snapshot() != self.started and not self.reload_pending():
                self.fx.say("vpskit jobs: its program or unit changed (a deploy): ending, for systemd to start the "
                            "new one")
                return 0
            slept = 0.0
            while slept < self.interval and not self.stopping:
                self.fx.sleep(0.5)
                slept += 0.5
        self.fx.say("vpskit jobs: stopped (no request in flight)")
        return 0


@contextlib.contextmanager
def quiet(app_dir: Path, fx: Effects, seconds: int, what: str) -> Iterator[bool]:
    """LOCK held while `what` stops or replaces the app's container: the worker's request in flight (its jobs)
    ends first, and no new one starts meanwhile. Waited for up to `seconds`, saying so every 10 s; True once held,
    False when the wait ran out (`what` goes on: a job that long is cut off, and said)."""
    if not (app_dir / LOCK).exists():  # no worker here: nothing to wait for
        yield True
        return
    fd = os.open(app_dir / LOCK, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        start, said = fx.clock(), -10
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held_ = True
                break
            except BlockingIOError:
                pass
            waited = int(fx.clock() - start)
            if waited >= seconds:
                fx.say(f"vpskit: the jobs worker's request (jobs running in the app) still runs after {seconds}s: "
                       f"{what} goes on, and may cut a job off")
                held_ = False
                break
            if waited - said >= 10:
                fx.say(f"vpskit: waiting for the jobs running in the app to finish before {what} ({waited}s of "
                       f"{seconds}s)")
                said = waited
            fx.sleep(0.5)
        yield held_
    finally:
        os.close(fd)


def unit(app: str) -> str:
    return f"vpskit-jobs-{app}"


FAILING_FOR = 60  # seconds of failed rounds before tasks/health.py fails (a restarting app fails one or two)


def health(active: str, last: Round | None, app: str, now: dt.datetime) -> tuple[str, str]:
    """tasks/health.py's line for the jobs worker: (ok|warn|FAIL, detail), from `systemctl is-active` of its unit
    and its last round."""
    if active != "active":
        return "FAIL", (f"the worker ({unit(app)}) is {active or 'unknown'}: queued jobs wait; see "
                        f"journalctl -u {unit(app)}, and run deploy.py to start it again")
    if last is None:
        return "warn", "the worker runs but has not asked the app yet"
    if not last.ok:
        try:
            began = dt.datetime.strptime(last.since or last.at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            failing = int((now - began).total_seconds())
        except ValueError:
            failing = FAILING_FOR + 1
        kind = "FAIL" if failing > FAILING_FOR else "warn"
        return kind, f"the worker {last.said()} (its rounds have failed for {max(failing, 0)}s)"
    if last.error:
        return "warn", last.error
    return "ok", f"the worker's last round {last.said()}"
