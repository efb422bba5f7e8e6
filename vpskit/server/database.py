"""The app's database as the server program reads it: its own db service, or an external one (DATABASE_URL in
the operator's .env: then the app's .env holds libpq's PGHOST and the rest) through a one-off client
container. No secret is on a command line: libpq reads them from the environment."""

from __future__ import annotations

import re
from pathlib import Path

from .docker import Docker

# The Payload migrations recorded in the database, in order (the client's fact asks the same: vpskit/commands.py).
APPLIED_MIGRATIONS_SQL = "select name from payload_migrations order by id"


def major(version: str) -> str:
    """The PostgreSQL major of a version as `show server_version` or PG_VERSION says it ("" when none):
    "17.6 (Debian 17.6-1.pgdg13+1)" -> "17", "9.6.24" -> "9.6" (before 10, a major had two numbers)."""
    found = re.match(r"\s*(\d+)(?:\.(\d+))?", version)
    if not found:
        return ""
    first, second = found.groups()
    return f"{first}.{second}" if int(first) < 10 and second else first


def data_mount(major_: str) -> str:
    """Where the database's volume is mounted in the db container: the official image keeps PGDATA in
    /var/lib/postgresql/data up to 17, and from 18 in /var/lib/postgresql/MAJOR/docker under a volume mounted at
    /var/lib/postgresql (it refuses to start with a volume at the old place). An unknown major keeps the old place."""
    return "/var/lib/postgresql" if major_ and major_key(major_) >= (18,) else "/var/lib/postgresql/data"


def major_key(major_: str) -> tuple[int, ...]:
    """A major in a form that compares in release order (9.6 < 10 < 17)."""
    return tuple(int(x) for x in major_.split(".") if x.isdigit())


def env_value(env_text: str, name: str) -> str:
    """A variable of a .env vpskit wrote (NAME=value or NAME="value"), or ""."""
    for line in env_text.splitlines():
        if line.startswith(f"{name}="):
            value = line.split("=", 1)[1].strip()
            return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value
    return ""


def is_external(env_text: str) -> bool:
    """An external database: the .env vpskit writes holds libpq's PGHOST."""
    return bool(env_value(env_text, "PGHOST"))


class Database:
    def __init__(self, docker: Docker, app_dir: Path):
        self.d, self.app_dir = docker, app_dir

    def external(self) -> bool:
        env = self.app_dir / ".env"
        return env.exists() and is_external(env.read_text())

    def env(self) -> str:
        env = self.app_dir / ".env"
        return env.read_text() if env.exists() else ""

    def argv(self, script: str, *args: str) -> list[str]:
        """The command that runs SCRIPT (with ARGS as $1...) by sh where PGUSER and PGDATABASE name the app's
        database: in its db service, or in the stack's client container for an external one."""
        if self.external():
            return ["docker", "compose", "run", "--rm", "-T", "--no-deps", "dbclient", "sh", "-c", script, "db_sh",
                    *args]
        return ["docker", "compose", "exec", "-T", "db", "sh", "-c",
                'export PGUSER="$POSTGRES_USER" PGDATABASE="$POSTGRES_DB"; ' + script, "db_sh", *args]

    def restore_into(self, database: str) -> list[str]:
        """The command that restores a dump (on its stdin) into `database` beside the live one: a scratch copy for
        a drill or a restore, objects owned by the app's own role."""
        return self.argv('pg_restore -d "$1" --no-owner --exit-on-error', database)

    def sh(self, script: str):
        return self.d.fx.run(*self.argv(script))

    def where(self) -> str:
        """Where the database is, for what is said: "the db service" or the external server's address."""
        if not self.external():
            return "the db service"
        env = self.env()
        return f"the external database {env_value(env, 'PGHOST')}:{env_value(env, 'PGPORT')}"

    def image(self) -> str:
        """The image with the database's client tools (pg_dump, pg_restore) for this stack."""
        r = self.d.compose("config", "--images", "dbclient" if self.external() else "db")
        return r.out.split()[0] if r.ok and r.out.split() else ""

    def server_version(self) -> str:
        """What the database server says its version is ("17.6"), "" when it does not answer."""
        return (self.sh('psql -XAtc "show server_version"').out.split() or [""])[0]

    def applied_migrations(self) -> list[str]:
        """The migrations recorded, in order; nothing when there is no database (or table) yet."""
        r = self.sh(f'psql -XAt -c "{APPLIED_MIGRATIONS_SQL}"')
        return r.out.split() if r.ok else []

    def run_migrations(self) -> tuple[int, str]:
        """One run of the app's one-shot `migrate` service: (its exit status, its output), the output also in the
        log. Detached: its output is read from its log and its status from `docker wait`, neither through
        compose's attach (an attached run was once seen to lose its output under load)."""
        fx = self.d.fx
        made = self.d.compose("run", "-d", "migrate")
        if not made.ok:
            fx.say((made.err + made.out).rstrip())
            return made.code or 1, made.err + made.out
        runner = made.out.strip().splitlines()[-1]
        # A runner still in "created" has an empty log and `docker wait` answers 0 at once: it would pass for a
        # run that applied everything.
        if self.d.inspect(runner, "{{.State.Status}}") == "created":
            fx.run("docker", "start", runner)
        code, output = fx.stream("docker", "logs", "-f", runner)
        waited = fx.run("docker", "wait", runner)
        status = int(waited.out.strip()) if waited.out.strip().isdigit() else (waited.code or 1)
        if not output.strip():
            again = fx.run("docker", "logs", runner)
            output = again.out + again.err
            if output.strip():
                fx.say(output.rstrip())
        fx.run("docker", "rm", "-f", runner)
        return status, output
