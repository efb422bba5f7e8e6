"""Docker and Compose as the release reads and drives them, in the app's folder, through Effects."""

from __future__ import annotations

import json

from .effects import Effects, Result

# A database error the app logs on every attempt: the wait for it ends on the third rather than at the timeout.
DB_ERRORS = ("ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "password authentication failed", "cannot connect to Postgres")


class Docker:
    def __init__(self, fx: Effects):
        self.fx = fx

    def compose(self, *args: str, **kw) -> Result:
        return self.fx.run("docker", "compose", *args, **kw)

    def ids(self, service: str, all_: bool = True, running: bool = False) -> list[str]:
        args = ["ps", *(["-a"] if all_ and not running else []), *(["--status", "running"] if running else []),
                "-q", service]
        return self.compose(*args).out.split()

    def services(self) -> list[str]:
        r = self.compose("config", "--services")
        return r.out.split() if r.ok else []

    def project(self) -> str:
        r = self.compose("config", "--format", "json")
        try:
            return json.loads(r.out).get("name", "") if r.ok else ""
        except ValueError:
            return ""

    def inspect(self, target: str, fmt: str) -> str | None:
        r = self.fx.run("docker", "inspect", "-f", fmt, target)
        return r.out.strip() if r.ok else None

    def name(self, cid: str) -> str:
        return (self.inspect(cid, "{{.Name}}") or "").lstrip("/")

    def up(self, *args: str) -> bool:
        """`docker compose up -d ARGS` with its output in the log, without its "Running" lines."""
        r = self.compose("up", "-d", *args)
        for line in (r.err + r.out).splitlines():
            if line.strip() and not line.rstrip().endswith(" Running"):
                self.fx.say(line)
        return r.ok

    def state(self, cid: str) -> tuple[str, int, int] | None:
        """(status, restart count, exit code) of a container, or None when it is gone."""
        out = self.inspect(cid, "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}")
        if not out:
            return None
        status, restarts, code = (out.split() + ["0", "0"])[:3]
        return status, int(restarts), int(code)

    def restarts(self, cid: str) -> int:
        s = self.state(cid)
        return s[1] if s else 0

    def health(self, cid: str) -> str:
        """Docker's verdict on a container: its healthcheck's status, healthy when it has none."""
        return self.inspect(cid, "{{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}") or ""

    def service_state(self, service: str) -> tuple[str, str]:
        """(status, health) of the service's container: e.g. running/healthy, exited/none; missing/none."""
        ids = self.ids(service)
        if not ids:
            return "missing", "none"
        out = self.inspect(ids[0], "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}")
        if not out:
            return "missing", "none"
        status, _, health = out.partition("/")
        return status, health or "none"

    def db_errors(self, cid: str, since: str) -> int:
        r = self.fx.run("docker", "logs", "--since", since, cid)
        lines = [line for line in (r.out + r.err).splitlines() if not line.startswith("vpskit:")]
        return sum(1 for line in lines if any(e in line for e in DB_ERRORS))

    def tail(self, cid: str, n: int = 25) -> None:
        """The container's last log lines, indented, into the log."""
        r = self.fx.run("docker", "logs", "--tail", str(n), cid)
        for line in (r.out + r.err).splitlines():
            self.fx.say(f"    | {line}")

    def remove(self, cid: str) -> None:
        self.fx.run("docker", "rm", "-f", cid)

    def env(self, cid: str, name: str) -> str:
        out = self.inspect(cid, "{{range .Config.Env}}{{println .}}{{end}}") or ""
        return next((line.split("=", 1)[1] for line in out.splitlines() if line.startswith(f"{name}=")), "")

    def images(self, repo: str) -> list[str]:
        r = self.fx.run("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repo)
        return [line for line in r.out.split() if line and not line.endswith(":<none>")]


def container_failure(state: tuple[str, int, int] | None, restarts_before: int, db_errors: int) -> str:
    """Why a container is not going to get ready ("" when it may still): it exited, it crashed since the wait
    began (running again by now, so its restart count is what is known), or it kept failing to reach its
    database (three errors logged)."""
    if state is None:
        return "is gone"
    status, restarts, code = state
    if status in ("exited", "dead"):
        return f"exited with code {code}"
    if restarts > restarts_before:
        return f"crashed and was restarted ({restarts - restarts_before} since the wait began)"
    if db_errors >= 3:
        return f"cannot reach its database ({db_errors} errors logged)"
    return ""
