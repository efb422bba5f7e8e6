"""pyinfra facts vpskit reads from a server: what Docker has (images) and runs (the compose stack)."""

from __future__ import annotations

from pyinfra.api import FactBase

from vpskit import baseline, commands, engine, memory, pgmajor, proxy


class DockerImageId(FactBase):
    """The id of image `ref` on the server; empty when it is absent or Docker is not installed.

    host.get_fact(DockerImageId, ref="postgres:17", _sudo=True) -> "sha256:..." or ""
    """

    def command(self, ref: str) -> str:
        return "command -v docker >/dev/null && " + commands.image_id(ref) + " || true"

    def process(self, output) -> str:
        return "\n".join(output).strip()

    def default(self) -> str:
        return ""


class ComposeStack(FactBase):
    """The stack of a compose project as it runs, in one round trip: the hash of the files on the server
    against the hash of the files last applied, per service its container (id, image id, state, health),
    and the image id of each of ``refs`` on the server ("" when absent).

    host.get_fact(ComposeStack, app_dir="/opt/example", project="example", refs=("example:v1",), _sudo=True) ->
        {"files": "ab12..", "applied": "ab12..", "images": {"example:v1": "sha256:.."},
         "services": {"app": {"container": "c0ff..", "image": "sha256:..", "state": "running",
                              "health": "healthy"}, ...}}
    """

    def command(self, app_dir: str, project: str, refs: tuple[str, ...] = ()) -> str:
        return commands.compose_state(app_dir, project, refs)

    def process(self, output) -> dict:
        return parse_compose_state(output)

    def default(self) -> dict:
        return {"files": "", "applied": "", "images": {}, "services": {}, "last": ""}


def parse_compose_state(lines) -> dict:
    state: dict = {"files": "", "applied": "", "images": {}, "services": {}, "last": ""}
    for line in lines:
        parts = line.split()
        if parts and parts[0] == "last":
            state["last"] = line.split(" ", 1)[1].strip() if len(parts) > 1 else ""  # history.LogLine
        elif parts and parts[0] in ("files", "applied"):
            state[parts[0]] = parts[1] if len(parts) > 1 else ""
        elif parts and parts[0] == "image" and len(parts) >= 2:
            state["images"][parts[1]] = parts[2] if len(parts) > 2 else ""
        elif len(parts) == 6 and parts[0] == "container":
            _, service, cid, image, status, health = parts
            count = state["services"].get(service, {}).get("count", 0) + 1
            state["services"][service] = {"container": cid, "image": image, "state": status, "health": health,
                                          "count": count}
    return state


class FileStates(FactBase):
    """sha256, mode and owner of each of ``paths`` in one round trip; None for a missing file.

    host.get_fact(FileStates, paths=("/opt/example/.env",), _sudo=True) ->
        {"/opt/example/.env": {"sha256": "..", "mode": "600", "user": "deploy", "group": "deploy"}}
    """

    def command(self, paths: tuple[str, ...]) -> str:
        return commands.file_states(paths)

    def process(self, output) -> dict:
        states: dict = {}
        for line in output:
            parts = line.split()
            if len(parts) == 2 and parts[1] == "missing":
                states[parts[0]] = None
            elif len(parts) == 5:
                path, digest, mode, user, group = parts
                states[path] = {"sha256": digest, "mode": mode, "user": user, "group": group}
        return states

    def default(self) -> dict:
        return {}


class UfwStatus(FactBase):
    """ufw's state: {"installed": bool, "active": bool, "rules": {"22/tcp", ...}} (rules allowed in)."""

    def command(self) -> str:
        return "if command -v ufw >/dev/null; then echo installed; ufw status; fi"

    def process(self, output) -> dict:
        lines = [line.strip() for line in output]
        rules = {line.split()[0] for line in lines if " ALLOW" in line and "(v6)" not in line}
        return {"installed": "installed" in lines, "active": "Status: active" in lines, "rules": rules}

    def default(self) -> dict:
        return {"installed": False, "active": False, "rules": set()}


class SshServerPort(FactBase):
    """The port this SSH connection reached on the server (what a firewall must allow), from SSH_CONNECTION;
    None when it cannot be read. Read it without sudo, which resets the environment and drops the variable:

    host.get_fact(SshServerPort, _sudo=False) -> 2200
    """

    def command(self) -> str:
        return 'echo "ssh ${SSH_CONNECTION:-}"'

    def process(self, output) -> int | None:
        parts = (output[0] if output else "").split()
        return int(parts[4]) if len(parts) == 5 and parts[4].isdigit() else None

    def default(self) -> None:
        return None


class AppliedMigrations(FactBase):
    """The Payload migrations recorded in the app's database, in order; empty when there is no database
    yet (or no payload_migrations table).

    host.get_fact(AppliedMigrations, app_dir="/opt/example", _sudo=True) -> ("20261128_202135_initial",)
    """

    def command(self, app_dir: str) -> str:
        return commands.applied_migrations(app_dir)

    def process(self, output) -> tuple[str, ...]:
        return tuple(line.split(None, 1)[1] for line in output if line.startswith("migration ") and " " in line)

    def default(self) -> tuple[str, ...]:
        return ()


class DatabaseRolePassword(FactBase):
    """The stored password of the app's database role (a SCRAM-SHA-256 or md5 verifier, vpskit.dbpassword), ""
    when no db service runs. Sensitive: compared, never printed.

    host.get_fact(DatabaseRolePassword, app_dir="/opt/example", _sudo=True) -> "SCRAM-SHA-256$4096:..."
    """

    def command(self, app_dir: str) -> str:
        return commands.role_password(app_dir)

    def process(self, output) -> str:
        return "\n".join(output).strip()

    def default(self) -> str:
        return ""


class DatabaseMajors(FactBase):
    """(the PostgreSQL major of the app's data on the server, the major `ref` runs when the image is there): ""
    for what is absent (no data yet, image not pulled yet: vpskit.pgmajor reads its tag then).

    host.get_fact(DatabaseMajors, project="example", ref="postgres:17", _sudo=True) -> ("15", "")
    """

    def command(self, project: str, ref: str) -> str:
        return pgmajor.state_command(project, ref)

    def process(self, output) -> tuple[str, str]:
        return pgmajor.parse_state(output)

    def default(self) -> tuple[str, str]:
        return "", ""


class ReleaseHistory(FactBase):
    """The releases kept on the server for rollback and the one serving (vpskit.releases.History).

    host.get_fact(ReleaseHistory, app_dir="/opt/example", _sudo=True) -> History(releases=(...), current=4)
    """

    def command(self, app_dir: str) -> str:
        return commands.release_history(app_dir)

    def process(self, output):
        from vpskit.releases import History

        return History.parse(output)

    def default(self):
        from vpskit.releases import History

        return History((), None)


class ConfigKeys(FactBase):
    """Which variables the server's configuration has from an operator's .env: those its live .env names in its
    header (None when it names none: written by an older vpskit, or not there yet), and whether the root-only
    configuration sends alerts (NOTIFY_URL). Names only.

    host.get_fact(ConfigKeys, app_dir="/opt/example", conf_dir="/etc/vpskit/example", _sudo=True) ->
        {"operator": {"SMTP_HOST", "SMTP_PASSWORD"}, "notify": True}
    """

    def command(self, app_dir: str, conf_dir: str) -> str:
        return commands.config_keys(app_dir, conf_dir)

    def process(self, output) -> dict:
        keys = None
        for line in output:
            if line.startswith("operator "):
                keys = set(line.split()[1:])
            elif line.strip() == "operator":
                keys = set()
        return {"operator": keys, "notify": any(line.strip() == "notify" for line in output)}

    def default(self) -> dict:
        return {"operator": None, "notify": False}


class ProxyState(FactBase):
    """The server's bundled proxy: hashes of its compose file and Caddyfile, each app's published ports,
    whether it runs, and the TCP ports something listens on.

    host.get_fact(ProxyState, _sudo=True) -> {"compose": "ab12..", "caddyfile": "..", "running": True,
        "ports": {"example": ("127.0.0.1:3000:3000",)}, "listening": {22, 3000}}
    """

    def command(self) -> str:
        return proxy.state_command()

    def process(self, output) -> dict:
        return proxy.parse_state(output)

    def default(self) -> dict:
        return proxy.parse_state([])


class DockerEngine(FactBase):
    """The Docker Engine package installed (docker-ce or docker.io) and apt's candidate for docker.io, as
    engine.parse gives them; engine.health_start_interval decides from it.

    host.get_fact(DockerEngine) -> {"installed": "26.1.5+dfsg1-9+b9", "candidate": "26.1.5+dfsg1-9+b9"}
    """

    def command(self) -> str:
        return engine.FACT_COMMAND

    def process(self, output) -> dict[str, str]:
        return engine.parse(list(output))


class ServerMemory(FactBase):
    """The server's memory, swap and the memory limits of its running containers (memory.Server): RAM is the
    smaller of /proc/meminfo and any cgroup limit the server runs under (a container-based VPS).

    host.get_fact(ServerMemory, _sudo=True) -> Server(ram_mb=961, swap_mb=1023, containers=(("vpskit-proxy", 64),))
    """

    def command(self) -> str:
        return memory.fact_command()

    def process(self, output) -> memory.Server:
        return memory.Server.parse(list(output))


class SshLogin(FactBase):
    """Who this connection logged in as and from where (SSH_CONNECTION), read without sudo.

    host.get_fact(SshLogin) -> {"user": "deploy", "client": "203.0.113.9", "port": "51234"} (None: not over SSH)
    """

    def command(self) -> str:
        return 'echo "$(id -un) ${SSH_CONNECTION:-}"'

    def process(self, output):
        user, _, rest = (output[0] if output else "").partition(" ")
        where = baseline.parse_connection(rest)
        return {"user": user, "client": where[0], "port": where[1]} if where else None


class LoginMethod(FactBase):
    """How sshd authenticated a login ("publickey", "password"; "" when its log does not say).

    host.get_fact(LoginMethod, user="deploy", client="203.0.113.9", port="51234", _sudo=True) -> "publickey"
    """

    def command(self, user: str, client: str, port: str) -> str:
        return baseline.login_method_command(user, client, port)

    def process(self, output) -> str:
        return output[-1].strip() if output else ""

    def default(self) -> str:
        return ""
