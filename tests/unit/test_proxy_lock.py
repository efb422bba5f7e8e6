"""The bundled proxy's files change under its lock, and only while the other apps' ports are the ones the deploy
read (review item 15: two apps deployed at once dropped each other's port); compose's failure to bring the proxy
up is reported and leaves the files as they were, so the next deploy tries again (review item 14). The command is
run here with sh on a folder standing in for /opt/vpskit-proxy, with a stand-in `docker`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vpskit import operations, proxy

DOCKER = """#!/bin/sh
echo "docker $*" >> "$STUB_LOG"
case "$1 $2" in
  "compose up") if [ "$STUB_UP" != 0 ]; then echo "Error response from daemon: port is already allocated"; fi
                exit "$STUB_UP" ;;
  "inspect -f") echo true ;;
esac
"""


def bed(tmp_path: Path, other_ports: str = "0.0.0.0:8080:8080\n") -> tuple[Path, dict]:
    folder = tmp_path / "proxy"
    (folder / "ports").mkdir(parents=True)
    (folder / "ports" / "shop").write_text(other_ports)
    (folder / "docker-compose.yml").write_text("before\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").write_text(DOCKER)
    (tmp_path / "bin" / "docker").chmod(0o755)
    state = proxy.parse_state([f"ports shop {other_ports.strip()}"])  # as the deploy read it
    return folder, state


def up(tmp_path, folder: Path, state: dict, compose_status: int = 0) -> subprocess.CompletedProcess:
    files = {"docker-compose.yml": "after\n", "ports/example": "127.0.0.1:3000:3000\n", "etc/Caddyfile": "{}\n"}
    line = proxy.up_command(files, "example", proxy.others_digest(state, "example"), folder=str(folder))
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "STUB_LOG": str(tmp_path / "calls"),
           "STUB_UP": str(compose_status)}
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env, timeout=60)


def test_the_files_change_while_the_other_apps_ports_are_as_read(tmp_path):
    folder, state = bed(tmp_path)
    out = up(tmp_path, folder, state)
    assert out.returncode == 0, out.stderr
    assert (folder / "docker-compose.yml").read_text() == "after\n"
    assert (folder / "ports" / "example").read_text() == "127.0.0.1:3000:3000\n"
    assert not list(folder.rglob("*.before"))
    assert "caddy reload" in (tmp_path / "calls").read_text()


def test_another_deploy_that_changed_the_ports_meanwhile_is_not_overwritten(tmp_path):
    folder, state = bed(tmp_path)
    (folder / "ports" / "shop").write_text("0.0.0.0:8080:8080\n0.0.0.0:8443:8443\n")  # after the read
    out = up(tmp_path, folder, state)
    assert out.returncode == 75 and proxy.CHANGED in out.stdout
    assert (folder / "docker-compose.yml").read_text() == "before\n"
    assert not (folder / "ports" / "example").exists()
    assert not (tmp_path / "calls").exists()  # compose never ran


def test_a_proxy_compose_cannot_bring_up_fails_and_leaves_its_files_as_they_were(tmp_path):
    folder, state = bed(tmp_path)
    out = up(tmp_path, folder, state, compose_status=1)
    assert out.returncode == 1
    assert "port is already allocated" in out.stdout
    assert "the proxy could not be brought up with these ports (compose's reason above)" in out.stderr
    assert (folder / "docker-compose.yml").read_text() == "before\n"
    assert not (folder / "ports" / "example").exists()  # so the next deploy sees the port missing and tries again


class Output:
    def __init__(self, stdout: list[str]):
        self.stdout_lines, self.stderr_lines = stdout, []
        self.stdout = "\n".join(stdout)


class Host:
    """Answers the proxy's commands as a server where another deploy added a port between read and write."""

    print_prefix = "[fake] "

    def __init__(self):
        self.commands: list[str] = []

    def run_shell_command(self, command: str, **_):
        self.commands.append(command)
        if command == proxy.state_command():
            return True, Output(["ports shop 0.0.0.0:8080:8080 0.0.0.0:8443:8443"])
        if len([c for c in self.commands if "docker compose up" in c]) == 1:
            return False, Output([proxy.CHANGED])
        return True, Output([])


def test_a_deploy_that_lost_the_race_reads_the_ports_again_and_keeps_the_other_apps(tmp_path):
    _, state = bed(tmp_path)
    host = Host()
    assert operations._proxy_up(None, host, "example", ("127.0.0.1:3000:3000",), "caddy:2", "{}", "", state)
    first, second = [c for c in host.commands if "docker compose up" in c]
    compose_of = proxy.compose_file(proxy.union({"shop": ("0.0.0.0:8080:8080", "0.0.0.0:8443:8443"),
                                                 "example": ("127.0.0.1:3000:3000",)}), "caddy:2", "")
    import base64

    assert base64.b64encode(compose_of.encode()).decode() in second
    assert base64.b64encode(compose_of.encode()).decode() not in first
