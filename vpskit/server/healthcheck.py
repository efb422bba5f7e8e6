"""The health check of one app on its server (tasks/health.py, the health timer, monitoring):
one line per check, "ok   <check>: <detail>", "warn <check>: <detail>" (something happened since the last
scheduled check: an OOM kill, a restart, swap written; a service started again) or "FAIL <check>: <detail>";
then "healthy", or "unhealthy: <checks>" and exit 1.

It changes nothing unless the health timer asks (vpskit-server notify sets these): VPSKIT_HEALTH_RECORD=FILE
writes today's counters (OOM kills, swap written, restarts) to FILE; VPSKIT_HEALTH_REPAIR=1 starts again a service
found stopped outside vpskit (not one stopped with tasks/stop.py, and never while a release, restore or stop
holds the lock).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import http.client
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import conf, jobs
from .backups import NAME, when
from .database import Database
from .docker import Docker
from .effects import Effects
from .stack import states

MIN_FREE_MB = 1024  # disk: FAIL below 1 GiB free or below 10 % of the disk (docs/DOCKER-DEPLOYMENT.md says so)
MIN_FREE_PCT = 10
SWAP_WARN_MB = 64  # swap: warn when more than this was written to swap since the last scheduled check
PROXY_DIR = Path("/opt/vpskit-proxy")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def add(self, kind: str, check: str, detail: str) -> None:
        self.lines.append(f"{kind:<4} {check}: {detail}")
        if kind == "FAIL":
            self.failed.append(check)

    def last(self) -> str:
        return f"unhealthy: {' '.join(self.failed)}" if self.failed else "healthy"


def kv(text: str) -> dict[str, str]:
    """`key value` lines (/proc/vmstat, the recorded counters) and `Key: value kB` lines (/proc/meminfo)."""
    out = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def disk(avail_kb: int, free_pct: int) -> tuple[str, str]:
    if avail_kb >= MIN_FREE_MB * 1024 and free_pct >= MIN_FREE_PCT:
        return "ok", f"{avail_kb // 1024} MB free ({free_pct}%)"
    return "FAIL", (f"only {avail_kb // 1024} MB free ({free_pct}%, below {MIN_FREE_MB} MB or {MIN_FREE_PCT}%): "
                    "prune images or grow the disk")


def memory(meminfo: dict[str, str]) -> tuple[str, str]:
    total, avail = int(meminfo.get("MemTotal", 0)), int(meminfo.get("MemAvailable", 0))
    said = f"{avail // 1024} MB available of {total // 1024} MB"
    return ("ok", said) if total and avail * 100 // total >= 5 else ("FAIL", f"only {said}")


def pressure(report: Report, vmstat: dict[str, str], meminfo: dict[str, str], last: dict[str, str] | None,
             last_at: str, containers: list[tuple[str, int, str]], pagesize: int) -> str:
    """The OOM kills, restarts and swap written since the last scheduled check (`last`: its counters, None before
    the first), reported; returns the counters to record now."""
    oom, swapped = int(vmstat.get("oom_kill", 0)), int(vmstat.get("pswpout", 0))
    if last is not None:
        since = f"since the last check at {last_at} UTC"
        kills = oom - int(last.get("oom_kill", 0))
        if kills > 0:
            report.add("warn", "oom", f"{kills} OOM kill(s) {since}: a process passed a memory limit (journalctl -k | "
                                      "grep -i 'out of memory')")
        else:
            report.add("ok", "oom", f"none {since}")
        for cid, count, name in containers:
            n = count - int(last.get(cid, 0))
            if n > 0:
                report.add("warn", name.lstrip("/"), f"Docker restarted it {n} time(s) {since}")
        written = (swapped - int(last.get("pswpout", 0))) * pagesize // 1048576
    else:
        since, written = "since the server started", 0
        report.add("ok", "oom", f"{oom} OOM kill(s) {since} (counted from the next scheduled check)")
    total, free = int(meminfo.get("SwapTotal", 0)), int(meminfo.get("SwapFree", 0))
    swap = f"{(total - free) // 1024} MB in use of {total // 1024} MB"
    if written > SWAP_WARN_MB:
        report.add("warn", "swap", f"{written} MB written to swap {since} ({swap}): the server is short of memory")
    else:
        report.add("ok", "swap", swap)
    return f"oom_kill {oom}\npswpout {swapped}\n" + "".join(f"{c} {n} {name}\n" for c, n, name in containers)


def backup_age(names: list[str], now: dt.datetime, max_hours: int, folder: str) -> tuple[str, str]:
    backups = sorted(n for n in names if NAME.match(n))
    if not backups:
        return "FAIL", f"no backup in {folder} yet: run tasks/backup.py"
    last = backups[-1]
    hours = int((now - when(last)).total_seconds() // 3600)
    if hours <= max_hours:
        return "ok", f"last {last} ({hours}h ago)"
    return "FAIL", f"last {last} is {hours}h old (limit {max_hours}h)"


def offsite_age(last_line: str | None, now: int, max_seconds: int) -> tuple[str, str]:
    """From the backups' .offsite-last ("NAME SNAPSHOT EPOCH", written once a copy is confirmed)."""
    parts = (last_line or "").split()
    if len(parts) < 3 or not parts[2].isdigit():
        return "FAIL", "no offsite copy yet: run tasks/backup.py"
    name, snapshot, at = parts[0], parts[1], int(parts[2])
    age = now - at
    took = f"{age // 3600}h {age % 3600 // 60}m"
    if age <= max_seconds:
        return "ok", f"last copy {name}, snapshot {snapshot[:8]} ({took} ago)"
    return "FAIL", (f"last copy {name} is {took} old (limit {max_seconds}s, offsite_max_age): run tasks/backup.py and "
                    "read its error")


# Each database's collation version as recorded when it was made, and the one the C library (or ICU) in the
# running image has (PostgreSQL 15+; an older server refuses the query, and nothing is said).
COLLATION_SQL = ("select datname || ' ' || datcollversion || ' ' || pg_database_collation_actual_version(oid) "
                 "from pg_database where datallowconn and datcollversion is not null "
                 "and pg_database_collation_actual_version(oid) is not null")


def collation(rows: str) -> tuple[str, str]:
    """FAIL when a database was made under another collation version than the image's library has now (a new
    base image under the same postgres_image tag): its text indexes may give wrong answers until rebuilt."""
    changed = [r.split() for r in rows.splitlines() if len(r.split()) == 3 and r.split()[1] != r.split()[2]]
    if not changed:
        return "ok", "every database's collation version is the library's"
    name, made, now = changed[0]
    more = f" (and {len(changed) - 1} more database(s))" if len(changed) > 1 else ""
    return "FAIL", (f"database {name} was made with collation version {made}, the image's library now has {now}{more}: "
                    f"its text indexes may give wrong answers until rebuilt: REINDEX DATABASE {name}; ALTER DATABASE "
                    f"{name} REFRESH COLLATION VERSION (docs/TROUBLESHOOTING.md #57)")


def reason_of(body: str) -> str:
    m = re.search(r'"reason":"([^"]*)"', body)
    return m.group(1) if m else ""


def offsite_value(app: str, name: str) -> str:
    return conf.value(app, name)


JOBS_WAIT = 25  # seconds the check waits for the jobs worker's next round after a failed one (jobs_interval: 10)


class HealthCheck:
    def __init__(self, app_dir: Path, backup_dir: Path, where: str, max_backup_hours: int, max_offsite_seconds: int,
                 fx: Effects):
        self.app_dir, self.backup_dir = app_dir, backup_dir
        address, _, port = where.rpartition(":")
        self.address, self.port = address or "127.0.0.1", port
        self.max_backup_hours, self.max_offsite_seconds = max_backup_hours, max_offsite_seconds
        self.fx, self.d = fx, Docker(fx)
        self.proc = Path(os.environ.get("VPSKIT_PROC", "/proc"))
        self.record = os.environ.get("VPSKIT_HEALTH_RECORD", "")
        self.repair = bool(os.environ.get("VPSKIT_HEALTH_REPAIR"))
        self.state = Path(os.environ.get("VPSKIT_STATE", f"/var/lib/vpskit/{app_dir.name}"))
        self.units = Path(os.environ.get("VPSKIT_UNITS", "/etc/systemd/system"))
        self.report = Report()

    def run(self) -> int:
        for line in self.lines():
            print(line, flush=True)
        return 1 if self.report.failed else 0

    def lines(self) -> list[str]:
        r = self.report
        if not self.app_dir.is_dir():
            r.add("FAIL", "app", f"nothing deployed at {self.app_dir}")
            return r.lines
        started = self.services()
        services = self.d.services()
        external = "dbclient" in self.d.compose("--profile", "tools", "config", "--services").out.split()
        if "app" in services:
            for path in ("/api/health", "/api/health/ready"):
                answer = self.http_get(path)
                for _ in range(15 if started else 0):  # a service just started gets a few seconds to answer
                    if answer.split(" ", 1)[0] == "200":
                        break
                    self.fx.sleep(1)
                    answer = self.http_get(path)
                code, _, body = answer.partition(" ")
                why = reason_of(body)
                if code == "200":
                    r.add("ok", path, "200")
                else:
                    r.add("FAIL", path, f"HTTP {code}" + (f": {why}" if why else ""))
        worker = jobs.unit(self.app_dir.name)
        if (self.units / f"{worker}.service").exists():  # this server runs the app's jobs worker
            active = self.fx.run("systemctl", "is-active", worker).out.strip()
            last = jobs.read_state(self.app_dir)
            # A failed round (the app was restarting, say): the worker's next one, a few seconds away, says more.
            for _ in range(JOBS_WAIT if active == "active" and last is not None and not last.ok else 0):
                self.fx.sleep(1)
                newer = jobs.read_state(self.app_dir)
                if newer is not None and newer.at != last.at:
                    last = newer
                    break
            kind, detail = jobs.health(active, last, self.app_dir.name, dt.datetime.now(dt.UTC))
            r.add(kind, "jobs", detail)
        kind, detail = self._disk()
        r.add(kind, "disk", detail)
        meminfo = kv(self._read(self.proc / "meminfo"))
        kind, detail = memory(meminfo)
        r.add(kind, "memory", detail)
        self._pressure(meminfo)
        if external:  # an external database is no service here: asked directly, from the server backing it up
            db = Database(self.d, self.app_dir)
            if db.sh('psql -XAtc "select 1"').out.strip() == "1":
                r.add("ok", "database", f"{db.where()} answers")
            else:
                r.add("FAIL", "database", f"{db.where()} does not answer from this server")
        if "db" in services and self.d.ids("db", all_=False):
            rows = Database(self.d, self.app_dir).sh(f'psql -XAt -d postgres -c "{COLLATION_SQL}"')
            if rows.ok:
                kind, detail = collation(rows.out)
                r.add(kind, "collation", detail)
        if "db" in services or external:  # backups are taken where the database is (or the app, for an external)
            names = [p.name for p in self.backup_dir.iterdir()] if self.backup_dir.is_dir() else []
            kind, detail = backup_age(names, dt.datetime.now(dt.UTC), self.max_backup_hours, str(self.backup_dir))
            r.add(kind, "backup", detail)
            if offsite_value(self.app_dir.name, "RESTIC_REPOSITORY"):
                last = self.backup_dir / ".offsite-last"
                kind, detail = offsite_age(self._read(last) if last.exists() else None,
                                           int(dt.datetime.now(dt.UTC).timestamp()), self.max_offsite_seconds)
                r.add(kind, "offsite", detail)
        r.lines.append(r.last())
        return r.lines

    def services(self) -> bool:
        """The stack's services and the server's proxy; True when this check started one again."""
        r, started = self.report, False
        found = states(self.d)
        if not found:
            r.add("FAIL", "stack", "no services (is docker-compose.yml valid? run deploy.py)")
        for s in found:
            state = f"{s.status} {s.health}"
            if s.status == "missing":
                r.add("FAIL", s.service, "no container (stack not up?)")
            elif s.status in ("exited", "created"):
                if self.start_again(s.service):
                    started = True
                    r.add("warn", s.service, f"was {s.status} (stopped outside vpskit): started again")
                else:
                    r.add("FAIL", s.service, f"container {state}")
            elif s.healthy:
                r.add("ok", s.service, state)
            else:
                r.add("FAIL", s.service, f"container {state}")
        if (PROXY_DIR / "docker-compose.yml").exists():
            st = self.d.inspect("vpskit-proxy", "{{.State.Status}}") or "missing"
            if st == "running":
                r.add("ok", "proxy", "running")
            elif st != "missing" and self.start_again("proxy"):
                started = True
                r.add("warn", "proxy", f"was {st} (stopped outside vpskit): started again")
            else:
                r.add("FAIL", "proxy", f"container {st}: run deploy.py")
        return started

    def start_again(self, service: str) -> bool:
        """A service found stopped by the health timer, though nobody stopped it with vpskit (tasks/stop.py leaves
        .vpskit-stopped; a release, restore or stop holds the lock), started again: True when it runs now."""
        if not self.repair:
            return False
        if service != "proxy" and (self.app_dir / ".vpskit-stopped").exists():
            return False
        lock = PROXY_DIR / ".lock" if service == "proxy" else self.app_dir / ".vpskit.lock"
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            if service == "proxy":
                self.fx.run("docker", "start", "vpskit-proxy")
                return self.d.inspect("vpskit-proxy", "{{.State.Status}}") == "running"
            self.d.compose("start", service)
            return self.d.service_state(service)[0] == "running"
        finally:
            os.close(fd)

    def http_get(self, path: str) -> str:
        """"STATUS BODY" of GET path where the app is published ("000" when nothing answers); port 0: asked from
        inside the app container."""
        if self.port == "0":
            r = self.fx.run("docker", "compose", "exec", "-T", "app", "node", "-e",
                            'fetch("http://127.0.0.1:" + process.env.PORT + process.argv[1]).then(async r => '
                            'console.log(r.status + " " + (await r.text())), () => console.log("000"))', path,
                            timeout=10)
            return r.out.strip() or "000"
        try:
            conn = http.client.HTTPConnection(self.address, int(self.port), timeout=10)
            conn.request("GET", path)
            answer = conn.getresponse()
            body = answer.read(2000).decode(errors="replace")
            conn.close()
            return f"{answer.status} {body}"
        except (OSError, http.client.HTTPException, ValueError):
            return "000"

    def _disk(self) -> tuple[str, str]:
        try:
            st = os.statvfs("/var/lib/docker")
        except OSError:
            return disk(0, 0)
        avail = st.f_bavail * st.f_frsize // 1024
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        usable = used + st.f_bavail * st.f_frsize
        used_pct = -(-used * 100 // usable) if usable else 100  # df rounds its use up
        return disk(avail, 100 - used_pct)

    def _pressure(self, meminfo: dict[str, str]) -> None:
        ids = self.d.compose("ps", "-a", "-q").out.split() + \
            self.fx.run("docker", "ps", "-a", "-q", "-f", "name=^vpskit-proxy$").out.split()
        containers = []
        if ids:
            out = self.fx.run("docker", "inspect", "-f", "{{.Id}} {{.RestartCount}} {{.Name}}", *ids).out
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1].isdigit():
                    containers.append((parts[0], int(parts[1]), parts[2]))
        last_path = self.state / "pressure"
        last, last_at = None, ""
        if last_path.exists():
            last = kv(self._read(last_path))
            last_at = dt.datetime.fromtimestamp(last_path.stat().st_mtime, dt.UTC).strftime("%H:%M")
        record = pressure(self.report, kv(self._read(self.proc / "vmstat")), meminfo, last, last_at, containers,
                          os.sysconf("SC_PAGE_SIZE"))
        if self.record:
            Path(self.record).write_text(record)

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text()
        except OSError:
            return ""
