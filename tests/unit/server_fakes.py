"""A recorded stand-in for the server program's Effects: a small Docker world (containers of one compose project,
the bundled proxy, the database's migrations table) that answers the commands the release runs, and a clock
that moves only when the program sleeps. Each answer is the output the real command gives (recorded on the
test bed); what a test changes is the world's state, and what it checks is what the program did to it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from vpskit.server.effects import Result


@dataclass
class Container:
    cid: str
    name: str
    service: str
    status: str = "running"
    restarts: int = 0
    exit_code: int = 0
    health: str = "healthy"  # "" when it has no healthcheck
    ready: bool = True  # its /api/health/ready answers 200
    port: str = "3000"
    logs: str = ""


@dataclass
class World:
    project: str = "example"
    services: tuple[str, ...] = ("app", "db")
    containers: list[Container] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # payload_migrations
    reload_ok: bool = True  # `caddy reload` accepts the route
    new_app_ready: bool = True  # the app container the release creates answers ready
    new_app_status: str = "running"
    db_starts: bool = True  # a recreated db container gets healthy
    db_config: str = "a"  # the db service's settings in the compose file in place
    runner_applies: tuple[str, ...] = ()  # what one run of the migrate service records
    runner_output: str = "Migrated"
    runner_status: int = 0
    images: list[str] = field(default_factory=list)
    up_fails: bool = False
    calls: list[tuple[str, ...]] = field(default_factory=list)
    time: float = 0.0
    said: list[str] = field(default_factory=list)
    app_dir: Path | None = None
    fail_on: str = ""  # a command (space-joined prefix) that raises, to stand for an unexpected error

    def by(self, key: str) -> Container | None:
        return next((c for c in self.containers if key in (c.cid, c.name)), None)

    def of(self, service: str) -> list[Container]:
        return [c for c in self.containers if c.service == service]

    def add(self, service: str, **kw) -> Container:
        n = len([c for c in self.containers if c.service == service]) + 1
        while self.by(f"{self.project}-{service}-{n}"):
            n += 1
        c = Container(f"id{len(self.calls)}{service}{n}", f"{self.project}-{service}-{n}", service, **kw)
        self.containers.append(c)
        return c


class FakeEffects:
    def __init__(self, world: World):
        self.w = world

    # --- Effects
    def say(self, line: str) -> None:
        self.w.said.append(line)

    def sleep(self, seconds: float) -> None:
        self.w.time += seconds

    def clock(self) -> float:
        return self.w.time

    def pipe(self, args, stdin, consume):
        r = self.run(*args, stdin=stdin)
        return r.code, consume(r.out.splitlines(keepends=True))

    def stream(self, *args: str) -> tuple[int, str]:
        r = self.run(*args)
        for line in (r.out + r.err).splitlines():
            self.say(line)
        return r.code, r.out + r.err

    def run(self, *args: str, input: str | None = None, timeout=None, show: bool = False,  # noqa: A002
            **kw) -> Result:
        self.w.calls.append(args)
        line = " ".join(args)
        if self.w.fail_on and line.startswith(self.w.fail_on):
            raise OSError(f"stand-in failure of {self.w.fail_on}")
        if args[:2] == ("docker", "compose"):
            return self.compose(list(args[2:]))
        if args[0] == "docker":
            return self.docker(list(args[1:]))
        if args[1:2] == ("notify",):
            return Result(0)
        return Result(0)

    # --- docker compose
    def compose(self, a: list[str]) -> Result:
        w = self.w
        if a[:2] == ["config", "--services"]:
            return Result(0, "\n".join(w.services) + "\n")
        if a[:3] == ["config", "--format", "json"]:
            return Result(0, json.dumps({"name": w.project}))
        if a[0] == "ps":
            service = a[-1]
            cs = w.of(service)
            if "-a" not in a:
                cs = [c for c in cs if c.status == "running"]
            return Result(0, "".join(f"{c.cid}\n" for c in cs))
        if a[0] == "up":
            if w.up_fails:
                return Result(1, "", "Error response from daemon: no space left on device\n")
            if a[-1] == "db":
                config = self.db_config_in_place()
                running = [c for c in w.of("db") if c.status == "running"]
                if running and getattr(running[0], "config", None) == config:
                    return Result(0, "", " Container example-db-1  Running\n")
                for c in w.of("db"):
                    w.containers.remove(c)
                c = w.add("db", health="healthy" if w.db_starts else "starting")
                c.config = config  # type: ignore[attr-defined]
                if not w.db_starts:
                    c.status, c.exit_code = "exited", 1
                return Result(0, "", f" Container {c.name}  Started\n")
            scale = int(next(x.split("=")[1] for x in a if x.startswith("app=")))
            while len(w.of("app")) < scale:
                w.add("app", ready=w.new_app_ready, status=w.new_app_status, health="starting")
            return Result(0, "", " Container example-app-2  Started\n")
        if a[:2] == ["exec", "-T"] and a[2] == "db":
            if any("payload_migrations" in x for x in a):
                return Result(0, "".join(f"{m}\n" for m in w.applied))
            return Result(0)
        if a[:2] == ["run", "-d"] and a[2] == "migrate":
            w.containers.append(Container("runner1", "example-migrate-run-1", "migrate", status="exited",
                                          exit_code=w.runner_status))
            w.applied += [m for m in w.runner_applies if m not in w.applied]
            return Result(0, "runner1\n")
        return Result(0)

    def db_config_in_place(self) -> str:
        text = (self.w.app_dir / "docker-compose.yml").read_text() if self.w.app_dir else ""
        m = re.search(r"db-config: (\w+)", text)
        return m.group(1) if m else "a"

    # --- docker
    def docker(self, a: list[str]) -> Result:
        w = self.w
        if a[0] == "inspect":
            fmt, target = a[2], a[3]
            c = w.by(target)
            if c is None:
                return Result(1, "", f"Error: No such object: {target}\n")
            return Result(0, self.format(fmt, c) + "\n")
        if a[0] == "exec" and a[1] == "vpskit-proxy":
            if a[2] == "caddy":
                return Result(0) if w.reload_ok else Result(1, "", 'Error: loading config: "level":"error" bad\n')
            url = a[-1]
            if url.endswith("/reverse_proxy/upstreams"):
                return Result(0, "[]")
            name = url.split("//")[1].split(":")[0]
            c = w.by(name)
            return Result(0 if c and c.status == "running" and c.ready else 1)
        if a[0] == "exec":
            c = w.by(a[1])
            ok = c is not None and c.status == "running" and c.ready
            if not c or c.status != "running":
                return Result(0, "no answer: ECONNREFUSED\n")
            return Result(0, "200 {\"status\":\"ready\"}\n" if ok else "503 {\"status\":\"not ready\"}\n")
        if a[0] == "logs":
            c = w.by(a[-1])
            if c and c.service == "migrate":
                return Result(0, w.runner_output + "\n")
            return Result(0, c.logs if c else "")
        if a[0] == "wait":
            c = w.by(a[1])
            return Result(0, f"{c.exit_code if c else 0}\n")
        if a[0] == "rm":
            c = w.by(a[-1])
            if c:
                w.containers.remove(c)
            return Result(0)
        if a[0] == "stop":
            c = w.by(a[-1])
            if c:
                c.status = "exited"
            return Result(0)
        if a[:2] == ["image", "ls"]:
            repo = a[-1]
            return Result(0, "".join(f"{r}\n" for r in w.images if r.rsplit(":", 1)[0] == repo))
        if a[:2] == ["image", "rm"]:
            w.images.remove(a[2])
            return Result(0)
        return Result(0)

    @staticmethod
    def format(fmt: str, c: Container) -> str:
        if fmt == "{{.Name}}":
            return f"/{c.name}"
        if fmt == "{{.State.Running}}":
            return "true" if c.status == "running" else "false"
        if fmt == "{{.State.Status}}":
            return c.status
        if fmt.startswith("{{.State.Status}} {{.RestartCount}}"):
            return f"{c.status} {c.restarts} {c.exit_code}"
        if fmt.startswith("{{.State.Status}}/"):
            return f"{c.status}/{c.health or 'none'}"
        if fmt.startswith("{{if .State.Health}}"):
            return c.health or "healthy"
        if fmt.startswith("{{range .Config.Env}}"):
            return f"PATH=/usr/bin\nPORT={c.port}\n"
        raise AssertionError(f"no recorded answer for docker inspect -f {fmt}")
