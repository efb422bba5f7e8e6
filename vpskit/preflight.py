"""Checks run by inventory.py before pyinfra connects to anything: every setting (group data, host data,
`--data`), the operator's .env and the app for the deploy files, the SSH key, the host key and whether
the SSH port answers. The first problem ends the run with one line naming it and the fix."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

from vpskit import app_check, build_database, envfile, node_version, settings
from vpskit.settings import SettingsError

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_FILES = {"deploy.py", "update.py"}


def cli_data(argv: list[str]) -> dict[str, str]:
    """The `--data key=value` pairs of the pyinfra command line."""
    data = {}
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--data" and i + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--data=") else None)
        if value is not None and "=" in value:  # pyinfra itself rejects a --data without "="
            key, val = value.split("=", 1)
            data[key] = val
    return data


def group_data(group: str) -> dict:
    data: dict = {}
    for name in ("all", group):
        path = ROOT / "group_data" / f"{name}.py"
        if path.exists():
            data.update({k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("_")})
    return data


def deploy_file(argv: list[str]) -> str:
    files = [a for a in argv if a.endswith(".py") and not a.endswith("inventory.py")]
    return Path(files[0]).name if files else ""


def check(group: str, host_data: dict, argv: list[str] | None = None) -> dict:
    """Validated settings for the one host; raises SettingsError on the first problem."""
    argv = sys.argv if argv is None else argv
    merged = {**group_data(group), **host_data, **cli_data(argv)}
    s = settings.load(merged)
    if deploy_file(argv) in DEPLOY_FILES:
        envfile.read()
        app(s)
    ssh(host_data)
    return s


def app(s: dict) -> app_check.AppInfo:
    """The app at app_path checked as the deploy will build it (its package manager, the Node it asks for)."""
    info = app_check.check((ROOT / s["app_path"]).resolve(), s["package_manager"])
    node_version.choose(s["node_image"], info.node)  # the Node the app asks for, from an image that gives it
    build_database.decide(s["build_database"], info, s["build_on"])  # a build that needs a database gets one
    if s["role"] == "app" and s["database_host"] == "external" and info.migrated_by_vpskit:
        # With a db server, it runs the migration runner; with a managed database there is none.
        raise SettingsError(f"{s['app_path']} has migrations it does not apply itself: with a managed database "
                            "on several servers the app must apply them at boot for now (postgresAdapter "
                            "prodMigrations: migrations)")
    return info


BANNER_WAIT = 8.0  # seconds for the SSH server's greeting, which it sends before anything else


def _ssh_banner(host: str, port: int) -> bytes:
    """The first bytes the server sends ("SSH-2.0-..."), or b"" when it sends nothing in BANNER_WAIT."""
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.settimeout(BANNER_WAIT)
        try:
            return conn.recv(64)
        except TimeoutError:
            return b""


def ssh(data: dict) -> None:
    host, port = data["ssh_hostname"], int(data["ssh_port"])
    key = data.get("ssh_key")
    if key and not Path(os.path.expanduser(key)).is_file():
        raise SettingsError(f"VPSKIT_SSH_KEY={key}: no such key file; point it at your private key")
    try:
        banner = _ssh_banner(host, port)
    except OSError as err:
        raise SettingsError(f"cannot reach {host}:{port} ({err.strerror or err}): check VPSKIT_HOST, "
                            "VPSKIT_SSH_PORT and the server's firewall") from None
    if banner.startswith((b"Not allowed at this time", b"Exceeded MaxStartups")):
        # OpenSSH's own refusal: PerSourcePenalties (OpenSSH 9.8+, Debian 13) holds back an address after
        # failed logins or connections that end before logging in; MaxStartups after too many at once.
        raise SettingsError(f"{host}:{port}: the SSH server refuses this address for now "
                            f"({banner.decode(errors='replace').strip()}: sshd holds back an address after failed "
                            "logins or too many connections): wait a minute, then run again (TROUBLESHOOTING 51)")
    if not banner.startswith(b"SSH-"):
        what = "no SSH server answered" if not banner else "another service than SSH answered"
        raise SettingsError(f"{host}:{port} accepts connections but {what} within {BANNER_WAIT:.0f}s: a firewall "
                            "on the server may be dropping SSH (ufw allowing another port?), or VPSKIT_SSH_PORT "
                            "names the wrong port")
    known = os.path.expanduser(data.get("ssh_known_hosts_file") or "~/.ssh/known_hosts")
    if data.get("ssh_strict_host_key_checking") == "yes":
        entry = host if port == 22 else f"[{host}]:{port}"
        found = subprocess.run(["ssh-keygen", "-F", entry, "-f", known], capture_output=True).returncode == 0
        if not found:
            raise SettingsError(f"no host key for {entry} in {known}: check the server's fingerprint, then run "
                                f"ssh-keyscan -p {port} {host} >> {known} (or set VPSKIT_SSH_ACCEPT_NEW=true once)")
