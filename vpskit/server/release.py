"""One app's releases on the server: a transaction the server owns, not the SSH session.

`start` snapshots the files the deploy pushed to APP_DIR/next, launches `run` detached (a transient systemd unit)
and follows its log; the client going away stops only the following. `run` takes the app's lock, puts the files
in place, brings the database up (recreated only when its own settings changed), applies pending migrations,
starts the new app container beside the serving one (never published: the proxy owns the ports), waits until it
answers ready, switches the proxy, drains and stops the old one, and records the release. Every step before the
switch has its undo (Run.put_back, Run.db_back, Run.throw_away): a failure there leaves the previous version
serving. Every attempt ends with one line in releases/log and its status (state.Status) for `follow`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import assets, history, jobs
from .database import Database
from .docker import Docker, container_failure
from .effects import Effects
from .health import service_healthy
from .locks import Lock
from .proxy import Proxy
from .state import AttemptParams, Status, read_json, write_json

PREFIX = "vpskit release:"
MIGRATION_ERROR = re.compile(r"Error running migration ([A-Za-z0-9_.-]+)")
KEEP_ATTEMPT_LOGS = 20


class Failed(Exception):
    """The attempt ends here with this one-line reason (its undo already done)."""


def follow_limit(lock_wait: int, timeout: int, drain: int) -> int:
    """How long a deploy follows a release: the lock wait, the database, migrations and readiness (each bounded by
    the timeout or far below), the drain, and a margin; past it the release goes on, unfollowed."""
    return lock_wait + 4 * timeout + drain + 1800


def unit_name(app: str, attempt: str) -> str:
    return f"vpskit-release-{app}-{attempt}"


def failed_migration(output: str) -> str:
    """The migration Payload says failed ("" when none): its error line counts even when the exit status is 0."""
    found = MIGRATION_ERROR.findall(output)
    return found[-1] if found else ""


def unrecorded(wanted: tuple[str, ...], applied: list[str]) -> list[str]:
    """The migrations a runner should have applied that the database does not record."""
    return sorted(set(wanted) - set(applied))


def newly_applied(before: list[str], now: list[str]) -> list[str]:
    return sorted(set(now) - set(before))


def copy_p(src: Path, dst: Path) -> None:
    """`cp -p`: content, mode, times and owner (a .env stays its owner's, mode 600)."""
    tmp = dst.with_name(dst.name + ".copying")
    shutil.copy2(src, tmp)
    st = src.stat()
    os.chown(tmp, st.st_uid, st.st_gid)
    tmp.replace(dst)


@dataclass(frozen=True)
class Layout:
    """The app's folder and what a release keeps in it."""

    app_dir: Path

    @property
    def app(self) -> str:
        return self.app_dir.name

    @property
    def releases(self) -> Path:
        return self.app_dir / "releases"

    @property
    def attempts(self) -> Path:
        return self.releases / "attempts"

    def attempt_dir(self, attempt: str) -> Path:
        return self.attempts / attempt

    def attempt_log(self, attempt: str) -> Path:
        return self.attempts / f"{attempt}.log"

    def status(self, attempt: str) -> Path:
        return self.attempts / f"{attempt}.status.json"

    def params(self, attempt: str) -> Path:
        return self.attempt_dir(attempt) / "params.json"

    def index(self) -> list[history.Entry]:
        p = self.releases / "index"
        return history.parse_index(p.read_text()) if p.exists() else []

    def current(self) -> str:
        p = self.app_dir / "current"
        return p.read_text().strip() if p.exists() else ""

    def version_of(self, number: str | int | None) -> str:
        return next((e.version for e in self.index() if str(e.number) == str(number)), "")

    def append_log(self, line: history.LogLine) -> None:
        history.write_log(self.releases / "log", line)


FILES = ("docker-compose.yml", ".env", "proxy-route.caddy")


def snapshot(lay: Layout, attempt: str, compose: Path, env_text_or_path: Path | str, route: Path) -> Path:
    """The attempt's own copy of what it releases (the .env mode 600)."""
    d = lay.attempt_dir(attempt)
    d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(compose, d / "docker-compose.yml")
    if isinstance(env_text_or_path, Path):
        copy_p(env_text_or_path, d / ".env")
    else:
        fd = os.open(d / ".env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(env_text_or_path)
    os.chmod(d / ".env", 0o600)
    (d / "proxy-route.caddy").write_text(route.read_text() if route.exists() else "")
    return d


class Run:
    """One release attempt (`release run`), as `start` or `rollback` described it in its params."""

    def __init__(self, app_dir: Path, attempt: str, fx: Effects, proxy: Proxy | None = None,
                 notify: Path | None = None):
        self.lay, self.attempt, self.fx = Layout(app_dir), attempt, fx
        self.d = Docker(fx)
        self.db = Database(self.d, app_dir)
        self.proxy = proxy or Proxy(fx)
        self.notify = notify if notify is not None else app_dir / "bin" / "vpskit-server"
        self.dir = self.lay.attempt_dir(attempt)
        self.p = AttemptParams.from_json(read_json(self.lay.params(attempt)) or {})
        self.lock = Lock(app_dir / ".vpskit.lock", fx)
        self.previous = ""  # the version serving before, for what is said
        self.live = ""  # its container
        self.new = ""  # the new app container, once created
        self.db_before = ""  # the db container before this release touched it
        self.port = ""  # the port the app listens on in its container
        self.switched = False
        self.released = 0

    # --- what is said and recorded
    def say(self, text: str) -> None:
        self.fx.say(f"{PREFIX} {text}")

    def fail(self, why: str):
        raise Failed(why)

    def main(self) -> int:
        start = self.fx.clock()
        code, reason = 0, ""
        try:
            self.steps()
        except Failed as f:
            code, reason = 1, str(f)
            self.say(reason)
        except Exception as err:  # noqa: BLE001 - any other way out is a failed attempt, said in one line
            code = 1
            reason = f"the release program stopped ({type(err).__name__}: {err}; see its log)"
            if self.switched:
                reason = (f"version {self.p.version} serves (container {self.new}), but the release stopped after "
                          f"the switch ({type(err).__name__}: {err}): run the deploy again to record it")
            self.say(reason)
        self.finish(code, reason, int(self.fx.clock() - start))
        return code

    def finish(self, code: int, reason: str, seconds: int) -> None:
        result = "ok" if code == 0 else "failed"
        self.lay.append_log(history.LogLine(history.now_utc(), self.p.version, self.p.files_hash[:12], self.p.who,
                                            f"{self.p.kind}:{result}", str(seconds), reason or "-"))
        # Written whole, then renamed: `follow` never reads a partial status.
        Status(code, reason).write(self.lay.status(self.attempt))
        shutil.rmtree(self.dir, ignore_errors=True)
        logs = sorted(self.lay.attempts.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in logs[KEEP_ATTEMPT_LOGS:]:
            for p in (old, old.with_name(old.name[:-4] + ".status.json"), old.with_name(old.name[:-4] + ".pid")):
                p.unlink(missing_ok=True)
        # After the status, and without the app's lock: a slow webhook never holds up the deploy that follows this
        # release, nor another release, restore or stop of the app.
        self.lock.release()
        text = f"{self.p.kind} of {self.p.version} {result} after {seconds}s" + (f": {reason}" if reason else "")
        if self.notify.exists():
            self.fx.run(str(self.notify), "notify", "--app-dir", str(self.lay.app_dir), "release",
                        "OK" if code == 0 else "FAILED", text)

    # --- the transaction
    def steps(self) -> None:
        p, app_dir = self.p, self.lay.app_dir
        if not p.version:
            self.fail(f"attempt {self.attempt} has no parameters ({self.lay.params(self.attempt)}): nothing changed")
        refusal = self.lock.take(p.lock_wait, f"{p.kind} of {p.version} by {p.who}")
        if refusal:
            self.fail(refusal)
        (app_dir / ".vpskit-stopped").unlink(missing_ok=True)  # stopped on purpose until a release
        self.previous = self.lay.version_of(self.lay.current())
        self.files_in_place()
        self.remove_leftovers()
        services = self.d.services()
        if "db" in services:
            self.database_up()
        applied_before = self.db.applied_migrations()
        if p.migrate:
            self.migrations()
        if "app" not in services:  # a db server: its database (and the migrations above) is all it serves
            self.record(applied_before)
            self.say(f"database of version {p.version} is serving")
            return
        self.start_new()
        self.wait_ready()
        self.publish_assets()
        self.switch()
        self.drain_old()
        self.docker_verdict()
        self.record(applied_before)
        if p.kind == "rollback":
            self.say(f"rolled back from {p.from_version or 'none'} to {p.version} (release {self.released}, with "
                     "today's secrets)")
        else:
            self.say(f"version {p.version} is serving as release {self.released}")

    def files_in_place(self) -> None:
        """The attempt's files in place; what was there before is kept for put_back."""
        serving = self.lay.releases / ".serving"
        self.live = serving.read_text().strip() if serving.exists() else ""
        for name, keep in zip(FILES, ("previous.yml", "previous.env", "previous.caddy"), strict=True):
            if (self.lay.app_dir / name).exists():
                copy_p(self.lay.app_dir / name, self.dir / keep)
        for name in FILES:
            copy_p(self.dir / name, self.lay.app_dir / name)

    def put_back(self) -> None:
        """Undo of files_in_place: the files in place before this attempt come back."""
        for name, keep in zip(FILES, ("previous.yml", "previous.env", "previous.caddy"), strict=True):
            if (self.dir / keep).exists():
                copy_p(self.dir / keep, self.lay.app_dir / name)

    def remove_leftovers(self) -> None:
        """Every app container but the serving one goes (left by an attempt cut short)."""
        if self.live and self.d.inspect(self.live, "{{.State.Running}}") != "true":
            # Recreated by hand (compose down/up): a running container of the app is what serves now.
            running = self.d.ids("app", running=True)
            self.live = self.d.name(running[0]) if running else ""
        for cid in self.d.ids("app"):
            name = self.d.name(cid)
            if name != self.live:
                self.say(f"removing {name}, left by an earlier attempt")
                self.d.remove(cid)

    # --- database
    def database_up(self) -> None:
        before = self.d.ids("db", all_=False)
        self.db_before = before[0] if before else ""
        if not self.d.up("--no-deps", "db"):
            self.db_back("compose could not start the database service (its message above)")
        now = self.d.ids("db", all_=False)
        if self.db_before and self.db_before not in now:
            self.say("the database service changed: it was restarted (the app is briefly without its database)")
        if not self.wait_db():
            self.db_back("the database did not become healthy")

    def wait_db(self) -> bool:
        """Until the db service is healthy; ends early when its container exits or keeps restarting."""
        start, since = self.fx.clock(), history.now_utc()
        ids = self.d.ids("db")
        cid = ids[0] if ids else ""
        rc0 = self.d.restarts(cid) if cid else 0
        while not service_healthy(*self.d.service_state("db")):
            if cid:
                why = container_failure(self.d.state(cid), rc0, self.d.db_errors(cid, since))
                if why:
                    self.say(f"the database container {why}; its last log lines:")
                    self.d.tail(cid, 15)
                    return False
            if self.fx.clock() - start >= self.p.timeout:
                return False
            self.fx.sleep(1)
        return True

    def db_back(self, why: str) -> None:
        """Undo of database_up: the previous files back and, when this release replaced the database, the
        previous one started again and waited for; ends the attempt saying what serves now."""
        self.put_back()
        v, prev = self.p.version, self.previous or "nothing"
        if self.db_before and self.db_before not in self.d.ids("db", all_=False):
            self.say("starting the database again on its previous settings")
            if self.d.up("--no-deps", "db") and self.wait_db():
                self.fail(f"{why}: version {v} was not released; the database is back on its previous settings and "
                          f"{prev} keeps serving")
            self.fail(f"{why}: version {v} was not released, and the database did not start again on its previous "
                      "settings either (above): the site is without its database until that is fixed")
        self.fail(f"{why}: version {v} was not released, {prev} keeps serving")

    # --- migrations, while the serving version keeps serving
    def migrations(self) -> None:
        p = self.p
        self.say(f"applying migrations before version {p.version} gets traffic ({self.previous or 'nothing'} is "
                 "serving meanwhile)")
        for run in (1, 2):  # a second run only after one that exited 0 yet left a migration unrecorded
            status, output = self.db.run_migrations()
            which = failed_migration(output)
            missing = [] if status or which else unrecorded(p.migrate, self.db.applied_migrations())
            if not missing or run == 2:
                break
            self.say(f"the migration runner ended (exit 0) without recording {' '.join(missing)} in the database: "
                     "running it once more")
        if status or which:
            self.put_back()
            self.fail(f"migration {which or 'run'} failed (Payload's output above; exit {status}): version "
                      f"{p.version} was not released, {self.previous or 'nothing'} keeps serving, and the failed "
                      "migration was rolled back, not recorded")
        if missing:
            self.put_back()
            self.fail(f"the migration runner ended twice (exit 0) without recording {' '.join(missing)} in the "
                      f"database (its output above): version {p.version} was not released, "
                      f"{self.previous or 'nothing'} keeps serving")

    # --- the new app container, beside the serving one and never published
    def start_new(self) -> None:
        scale = 2 if self.live else 1
        if not self.d.up("--no-deps", "--no-recreate", "--scale", f"app={scale}", "app"):
            for cid in self.d.ids("app"):
                if self.d.name(cid) != self.live:
                    self.d.remove(cid)
            self.put_back()
            self.fail(f"compose could not create the new app container (its message above): version "
                      f"{self.p.version} was not released; {self.previous or 'nothing'} keeps serving")
        names = [self.d.name(cid) for cid in self.d.ids("app")]
        self.new = next((n for n in reversed(names) if n and n != self.live), "")
        if not self.new:
            self.put_back()
            self.fail(f"compose started no new app container for version {self.p.version}: "
                      f"{self.previous or 'nothing'} keeps serving")
        self.port = self.d.env(self.new, "PORT")
        self.say(f"started {self.new} (version {self.p.version}) beside {self.live or 'nothing'}; waiting up to "
                 f"{self.p.timeout}s for it to answer ready")

    def route(self) -> str:
        return (self.dir / "proxy-route.caddy").read_text()

    def ready_once(self) -> bool:
        url = f"http://{self.new}:{self.port}/api/health/ready"
        if self.route().strip():  # through the bundled proxy's network, as the proxy will reach it
            return self.proxy.answers(url)
        return self.ready_answer().startswith("200 ")

    def ready_answer(self) -> str:
        """What the app's ready route answers now, asked inside its container: "STATUS BODY" on one line, or
        "no answer: WHY"."""
        r = self.fx.run("docker", "exec", self.new, "node", "-e", ANSWER_JS, self.port)
        return " ".join((r.out + r.err).split())[:400]

    def wait_ready(self) -> None:
        start, since, shown = self.fx.clock(), history.now_utc(), self.fx.clock()
        rc0 = self.d.restarts(self.new)
        while True:
            if self.ready_once():
                self.say(f"{self.new} answers ready after {int(self.fx.clock() - start)}s")
                return
            waited = int(self.fx.clock() - start)
            why = container_failure(self.d.state(self.new), rc0, self.d.db_errors(self.new, since))
            if why:
                self.throw_away(f"the new container {self.new} {why} after {waited}s")
            if waited >= self.p.timeout:
                self.throw_away(f"the new container {self.new} did not answer ready within {self.p.timeout}s (its "
                                f"ready route: {self.ready_answer()})")
            if self.fx.clock() - shown >= 10:
                self.say(f"waiting for {self.new} to answer ready, {waited}s of {self.p.timeout}s")
                shown = self.fx.clock()
            self.fx.sleep(1)

    def throw_away(self, why: str) -> None:
        """Undo of start_new (and of a refused switch): the new container goes, the previous files come back."""
        self.d.tail(self.new, 25)
        self.d.remove(self.new)
        self.put_back()
        if self.live:
            self.fail(f"{why}: version {self.p.version} was not released; {self.previous or 'the earlier release'} "
                      f"keeps serving (container {self.live}, untouched)")
        self.fail(f"{why}: version {self.p.version} was not released; there was no earlier release serving")

    # --- switch, drain, stop
    def publish_assets(self) -> None:
        """The new version's /_next/static beside the kept versions', served by the proxy (vpskit/server/assets.py):
        pages loaded before the switch keep loading their scripts."""
        if not self.route().strip():
            return
        if why := assets.publish(self.fx, self.new, self.lay.app, self.p.version, self.proxy.root):
            self.say(f"static files of {self.p.version} not kept beside the others: {why}; the app serves its own")

    def switch(self) -> None:
        if self.route().strip():
            if not self.proxy.route_to(self.route(), self.lay.app, f"{self.new}:{self.port}"):
                self.throw_away("the proxy refused the new route (its reason above)")
            self.say(f"proxy switched to {self.new}")
        self.switched = True
        tmp = self.lay.releases / ".serving.new"
        tmp.write_text(f"{self.new}\n")
        tmp.replace(self.lay.releases / ".serving")

    def drain_old(self) -> None:
        if not self.live:
            return
        waited = 0
        if self.route().strip():
            self.fx.sleep(1)
            while waited < self.p.drain and self.proxy.in_flight(f"{self.live}:{self.port}") > 0:
                self.fx.sleep(1)
                waited += 1
        else:
            # An external proxy (Traefik's Docker provider) routes only to containers Docker reports healthy and
            # notices containers that go: the old one stops once the new one is healthy and the drain time passed.
            while self.d.health(self.new) != "healthy" and waited < self.p.timeout:
                self.fx.sleep(1)
                waited += 1
            self.fx.sleep(self.p.drain)
        # The jobs worker's request to the old container (jobs running there) ends before it stops.
        with jobs.quiet(self.lay.app_dir, self.fx, self.p.timeout, f"stopping {self.live}"):
            self.fx.run("docker", "stop", "-t", "30", self.live)
        self.d.remove(self.live)
        self.say(f"stopped {self.live} ({self.previous or 'its version'}) after draining")

    def docker_verdict(self) -> None:
        """Docker's own healthcheck agrees before the release ends (`docker ps`, tasks/health.py and the next deploy
        read it; it says "starting" until its first check). Bounded; a late verdict is reported, not a failure."""
        waited = 0
        while self.d.health(self.new) == "starting" and waited < 30:
            self.fx.sleep(1)
            waited += 1
        verdict = self.d.health(self.new)
        if verdict != "healthy":
            self.say(f"Docker's healthcheck says {self.new} is {verdict or 'unknown'} after {waited}s (vpskit's "
                     "ready check passed)")

    # --- record
    def record(self, applied_before: list[str]) -> None:
        """The desired state kept for rollback: a release gets the next number, a rollback is the release it went
        back to (its .env now with today's secrets); older ones beyond `keep` go, with their images."""
        lay, p = self.lay, self.p
        (lay.app_dir / ".applied").write_text(history.dir_hash(lay.app_dir) + "\n")
        entries = lay.index()
        came_after = lay.current()
        if p.kind == "rollback" and p.release is not None:
            n = p.release
            entries = [history.Entry(e.number, e.version, p.files_hash[:12], e.came_after, e.at)
                       if e.number == n else e for e in entries]
        else:
            n = history.next_number([e.number for e in entries])
            entries.append(history.Entry(n, p.version, p.files_hash[:12],
                                         int(came_after) if came_after.isdigit() else None, history.now_utc()))
        shutil.copyfile(self.dir / "docker-compose.yml", lay.releases / f"{n}.yml")
        copy_p(self.dir / ".env", lay.releases / f"{n}.env")
        shutil.copyfile(self.dir / "proxy-route.caddy", lay.releases / f"{n}.caddy")
        (lay.app_dir / "current").write_text(f"{n}\n")
        self.released = n
        # The kept releases hold today's secrets too: a rotated one is gone from the server's disk.
        today = (lay.app_dir / ".env").read_text()
        for e in entries:
            env = lay.releases / f"{e.number}.env"
            if e.number != n and env.exists():
                tmp = env.with_name(env.name + ".new")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(history.with_current_secrets(env.read_text(), today))
                tmp.replace(env)
        kept = history.kept_numbers([e.number for e in entries], p.keep, n)
        for e in entries:
            if e.number not in kept:
                for ext in ("yml", "env", "caddy", "migrations"):
                    (lay.releases / f"{e.number}.{ext}").unlink(missing_ok=True)
        entries = [e for e in entries if e.number in kept]
        if self.route().strip() and (removed := assets.prune(self.lay.app, {e.version for e in entries},
                                                             self.proxy.root)):
            self.say(f"removed {removed} static files only releases no longer kept had")
        tmp = lay.releases / "index.new"
        tmp.write_text("".join(e.line() for e in entries))
        tmp.replace(lay.releases / "index")
        self.prune_images({e.version for e in entries})
        self.record_migrations(n, applied_before)

    def prune_images(self, versions: set[str]) -> None:
        project = self.d.project()
        if not project:
            return
        pushed = self.lay.app_dir / "next" / "docker-compose.yml"
        pending = history.compose_images(pushed.read_text()) if pushed.exists() else set()
        gone = history.images_to_prune(self.d.images(project), versions, pending)
        gone += self.d.images(f"{project}-migrate")  # runners of an older vpskit: single-use, applied by now
        for ref in gone:
            if self.fx.run("docker", "image", "rm", ref).ok:
                self.say(f"pruned image {ref}")

    def record_migrations(self, n: int, before: list[str]) -> None:
        now = self.db.applied_migrations()
        new = newly_applied(before, now)
        if new:
            (self.lay.releases / f"{n}.migrations").write_text("\n".join(new) + "\n")
            self.say(f"migrations applied by {self.p.version}: {' '.join(new)}")
        elif now:
            self.say(f"no migration to apply ({len(now)} recorded in the database)")


ANSWER_JS = ('fetch("http://127.0.0.1:" + process.argv[1] + "/api/health/ready", { signal: AbortSignal.timeout(8000) })'
             '.then(async r => console.log(r.status, (await r.text()).slice(0, 300)), '
             'e => console.log("no answer:", (e.cause && e.cause.code) || e.name))')


# --- the client-facing commands: start, rollback, follow, list
class Releases:
    def __init__(self, app_dir: Path, fx: Effects, program: Path):
        self.lay, self.fx, self.program = Layout(app_dir), fx, program

    def die(self, why: str) -> int:
        self.fx.say(f"{PREFIX} {why}")
        return 1

    def start(self, attempt: str, params: AttemptParams) -> int:
        lay = self.lay
        lay.attempts.mkdir(parents=True, exist_ok=True)
        history.upgrade_older(lay.releases, lay.app_dir / "current")
        nxt = lay.app_dir / "next"
        if not (nxt / "docker-compose.yml").exists():
            return self.die("nothing to release: next/docker-compose.yml is missing (run deploy.py)")
        d = snapshot(lay, attempt, nxt / "docker-compose.yml", nxt / ".env", nxt / "proxy-route.caddy")
        if history.dir_hash(d) != params.files_hash:
            shutil.rmtree(d, ignore_errors=True)
            return self.die(f"the files of version {params.version} were replaced on the server by another deploy "
                            f"({pushed_by(nxt)}) before this release began: nothing was changed by this run; run "
                            "the deploy again once the other deploy has ended")
        write_json(lay.params(attempt), params.to_json())
        self.launch(attempt)
        return self.follow(attempt, follow_limit(params.lock_wait, params.timeout, params.drain))

    def rollback(self, target: int, params: AttemptParams) -> int:
        lay = self.lay
        lay.attempts.mkdir(parents=True, exist_ok=True)
        history.upgrade_older(lay.releases, lay.app_dir / "current")
        kept = [e.number for e in lay.index()]
        if target not in kept or not (lay.releases / f"{target}.yml").exists():
            return self.die(f"no release {target} kept here (kept: {' '.join(map(str, kept)) or 'none'}): list them "
                            "with tasks/rollback.py --data list=true")
        attempt = f"{history.now_utc().replace('-', '').replace(':', '')}-rollback-{os.getpid()}"
        today = (lay.app_dir / ".env").read_text()
        old_env = lay.releases / f"{target}.env"
        env = history.with_current_secrets(old_env.read_text(), today) if old_env.exists() else today
        d = snapshot(lay, attempt, lay.releases / f"{target}.yml", env, lay.releases / f"{target}.caddy")
        p = AttemptParams(**{**params.to_json(), "migrate": (), "kind": "rollback", "release": target,
                             "version": lay.version_of(target), "from_version": lay.version_of(lay.current()),
                             "files_hash": history.dir_hash(d)})
        write_json(lay.params(attempt), p.to_json())
        self.launch(attempt)
        return self.follow(attempt, follow_limit(p.lock_wait, p.timeout, p.drain))

    def launch(self, attempt: str) -> None:
        """`run` in a transient systemd unit of its own (or a new session where systemd is absent)."""
        log = self.lay.attempt_log(attempt)
        run = [str(self.program), "release", "run", "--app-dir", str(self.lay.app_dir), "--attempt", attempt]
        if Path("/run/systemd/system").is_dir() and shutil.which("systemd-run"):
            r = self.fx.run("systemd-run", "--quiet", "--collect", "--unit", unit_name(self.lay.app, attempt),
                            "--property", f"StandardOutput=append:{log}", "--property",
                            f"StandardError=append:{log}", *run)
            if not r.ok:
                raise RuntimeError(f"systemd-run could not start the release: {r.err.strip()}")
            return
        with open(log, "ab") as out:
            proc = subprocess.Popen(run, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        (self.lay.attempts / f"{attempt}.pid").write_text(f"{proc.pid}\n")

    def alive(self, attempt: str) -> bool:
        """The attempt's process still runs (when it cannot be asked, it counts as running: the deadline of
        `follow` still bounds the wait)."""
        pid = self.lay.attempts / f"{attempt}.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text().strip()), 0)
            except (OSError, ValueError):
                return False
            return _not_zombie(int(pid.read_text().strip()))
        if not Path("/run/systemd/system").is_dir():
            return True
        return self.fx.run("systemctl", "is-active", "--quiet", unit_name(self.lay.app, attempt)).ok

    def follow(self, attempt: str, limit: int = 86400) -> int:
        """The attempt's log as it grows, until its status appears (or its process ends without one: recorded as
        failed); after `limit` seconds, stops following (the release goes on on the server)."""
        log, status_path = self.lay.attempt_log(attempt), self.lay.status(attempt)
        offset, start, polls = 0, self.fx.clock(), 0

        def show() -> None:
            nonlocal offset
            if log.exists():
                with open(log, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                end = data.rfind(b"\n") + 1
                if end:
                    self.fx.say(data[:end].decode(errors="replace").rstrip("\n"))
                    offset += end

        while True:
            show()
            status = Status.read(status_path)
            if status is not None:
                show()
                return status.code
            polls += 1
            if polls % 4 == 0 and not self.alive(attempt):
                self.fx.sleep(1)  # it writes its status before it ends: read once more
                if Status.read(status_path) is not None:
                    continue
                show()
                return self.ended_without_status(attempt)
            if self.fx.clock() - start >= limit:
                self.fx.say(f"{PREFIX} attempt {attempt} is still running on the server after {limit}s: stopped "
                            f"following it (its log: {log})")
                return 1
            self.fx.sleep(0.5)

    def ended_without_status(self, attempt: str) -> int:
        """The attempt recorded as failed: its process ended without writing a result (stopped, killed, out of
        memory), so nothing says what it finished."""
        why = (f"release attempt {attempt} ended without a result (its process was stopped or killed; its log is "
               "above): recorded as failed; run the deploy again: it removes what the attempt left and releases again")
        self.fx.say(f"{PREFIX} {why}")
        p = AttemptParams.from_json(read_json(self.lay.params(attempt)) or {"version": "?", "files_hash": "",
                                                                             "who": "?"})
        self.lay.append_log(history.LogLine(history.now_utc(), p.version or "?", p.files_hash[:12] or "-",
                                            p.who or "?", f"{p.kind}:failed", "-", why))
        Status(1, why).write(self.lay.status(attempt))
        return 1

    def list(self) -> int:
        """The release log, then the releases kept for rollback (reads only)."""
        log = self.lay.releases / "log"
        if log.exists() and log.stat().st_size:
            print("release log (time, version, configuration, who, result, seconds, reason):")
            for line in log.read_text().splitlines()[-20:]:
                print(f"  {history.LogLine.parse(line).shown()}")
        current = self.lay.current()
        print("kept for rollback, oldest first (release, version, configuration, released):")
        for e in self.lay.index():
            mark = " (current)" if str(e.number) == current else ""
            print(f"  {e.number}  {e.version}{mark}  config {e.config}  {e.at}")
        return 0


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def pushed_by(nxt: Path) -> str:
    """Whose files are in next/ now: "version V by WHO" (next/origin, pushed with them), or the version their
    compose file names."""
    origin = nxt / "origin"
    if origin.exists():
        version, _, who = origin.read_text().strip().partition("\t")
        if version:
            return f"version {version} by {who or 'someone'}"
    return f"version {app_version((nxt / 'docker-compose.yml').read_text()) or 'unknown'}"


def app_version(compose: str) -> str:
    """The app image's tag a compose file names (the version it releases)."""
    for ref in sorted(history.compose_images(compose)):
        if ref.rsplit(":", 1)[0].split("/")[-1] not in ("postgres", "caddy") and ":" in ref:
            return ref.rsplit(":", 1)[1]
    return ""
