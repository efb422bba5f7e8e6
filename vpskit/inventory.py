"""Where the hosts come from: the environment or the operator's .env (environment wins), else the local
demo VPS of the test bed. One server (VPSKIT_HOST), or app servers and a db server (VPSKIT_APP_HOSTS,
VPSKIT_DB_HOST). Every VPSKIT_<SETTING> variable (e.g. VPSKIT_IMAGE_TRANSPORT=ssh) becomes host
data, overriding group_data."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values

from vpskit import preflight
from vpskit.envfile import env_file_path
from vpskit.media import several_app_servers_check
from vpskit.settings import CHECKS, SettingsError, db_private_address

ROOT = Path(__file__).resolve().parent.parent
# The local demo VPS of `make demo` (the names and ports can be moved, e.g. by a test running next to it).
DEMO = ROOT / ".testbed" / "vps" / os.environ.get("VPSKIT_DEMO_NAME", "vpskit-demo")
DEMO_PORT = int(os.environ.get("VPSKIT_DEMO_SSH_PORT", "2222"))
DEMO_HTTP_PORT = int(os.environ.get("VPSKIT_DEMO_HTTP_PORT", "8080"))
GROUPS = ("production", "staging")


def _config() -> dict[str, str]:
    path = env_file_path()
    file_values = {k: v or "" for k, v in dotenv_values(path).items()} if path.exists() else {}
    return {**file_values, **{k: v for k, v in os.environ.items() if k.startswith("VPSKIT_")}}


def hosts() -> dict[str, list]:
    """{group: [(name, data)]} for inventory.py: the production or staging group, and app_servers and
    db_servers (empty on one server). VPSKIT_HOST names the one server; VPSKIT_APP_HOSTS and VPSKIT_DB_HOST
    name several (see servers())."""
    cfg = _config()
    data: dict[str, object] = {}
    for key in CHECKS:
        if f"VPSKIT_{key.upper()}" in cfg:
            data[key] = cfg[f"VPSKIT_{key.upper()}"]
    group = cfg.get("VPSKIT_GROUP", "production")
    if group not in GROUPS:
        raise SettingsError(f"VPSKIT_GROUP={group!r} is not valid: use production or staging")
    if cfg.get("VPSKIT_APP_HOSTS") or cfg.get("VPSKIT_DB_HOST"):
        external = bool(cfg.get("DATABASE_URL"))  # a managed Postgres instead of a db server
        if external and cfg.get("VPSKIT_DB_HOST"):
            raise SettingsError("DATABASE_URL in .env names an external database, and VPSKIT_DB_HOST a db server: "
                                "keep one (remove VPSKIT_DB_HOST, or DATABASE_URL to use the db server)")
        if not (cfg.get("VPSKIT_APP_HOSTS") and (cfg.get("VPSKIT_DB_HOST") or external)):
            raise SettingsError("VPSKIT_APP_HOSTS and VPSKIT_DB_HOST go together: list the app servers and the "
                                "db server, or the app servers and a managed Postgres's DATABASE_URL in .env (or "
                                "neither, and VPSKIT_HOST for one server)")
        apps = [_entry(e, "VPSKIT_APP_HOSTS") for e in cfg["VPSKIT_APP_HOSTS"].split(",") if e.strip()]
        db = None if external else _entry(cfg["VPSKIT_DB_HOST"], "VPSKIT_DB_HOST")
        listed = servers(app=apps, db=db, common={**data, **_ssh_data(cfg)})
        for _name, host_data in listed["app_servers"] + listed["db_servers"]:
            checked = preflight.check(group, host_data)
            if host_data["role"] == "app":
                several_app_servers_check(len(listed["app_servers"]), checked)
        return {**{g: (listed["app_servers"] + listed["db_servers"] if g == group else []) for g in GROUPS},
                "app_servers": listed["app_servers"], "db_servers": listed["db_servers"]}
    host = cfg.get("VPSKIT_HOST", "")
    if not host:
        if not (DEMO / "id_ed25519").exists():
            raise SettingsError("no host configured: set VPSKIT_HOST (and VPSKIT_SSH_USER, VPSKIT_SSH_KEY) in .env, "
                                "or run `make demo` for a local demo VPS")
        cfg.setdefault("VPSKIT_SSH_PORT", str(DEMO_PORT))
        cfg.setdefault("VPSKIT_SSH_USER", "deploy")
        cfg.setdefault("VPSKIT_SSH_KEY", str(DEMO / "id_ed25519"))
        cfg.setdefault("VPSKIT_SSH_KNOWN_HOSTS", str(DEMO / "known_hosts"))
        # The demo VPS has no registry to pull from, and its port 3000 is this machine's 127.0.0.1:8080.
        data.setdefault("image_transport", "ssh")
        data.setdefault("publish_host", "0.0.0.0")  # noqa: S104 - inside the VPS, published on 127.0.0.1 only
        data.setdefault("public_url", f"http://127.0.0.1:{DEMO_HTTP_PORT}")
        host = "127.0.0.1"
    port = _port(cfg.get("VPSKIT_SSH_PORT", "22"), "VPSKIT_SSH_PORT")
    data.update(ssh_hostname=host, ssh_port=port, **_ssh_data(cfg))
    name = host if port == 22 else f"{host}:{port}"
    preflight.check(group, data)
    return {**{g: ([(name, data)] if g == group else []) for g in GROUPS}, "app_servers": [], "db_servers": []}


def _port(text: str, key: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{key}={text!r} is not a port number: use e.g. 22") from None


def _ssh_data(cfg: dict[str, str]) -> dict[str, object]:
    """SSH user, key and host-key policy, shared by every host."""
    data: dict[str, object] = {
        "ssh_user": cfg.get("VPSKIT_SSH_USER", "deploy"),
        # Host keys are always verified; first contact with a new server is an explicit opt-in.
        "ssh_strict_host_key_checking": "accept-new" if cfg.get("VPSKIT_SSH_ACCEPT_NEW", "").lower() == "true"
        else "yes",
    }
    if cfg.get("VPSKIT_SSH_KEY"):
        data["ssh_key"] = cfg["VPSKIT_SSH_KEY"]
    if cfg.get("VPSKIT_SSH_KNOWN_HOSTS"):
        data["ssh_known_hosts_file"] = cfg["VPSKIT_SSH_KNOWN_HOSTS"]
    return data


def _entry(text: str, key: str) -> tuple[str, dict[str, object]]:
    """ "203.0.113.5:2222 10.0.0.5" -> ("203.0.113.5:2222", {ssh_hostname, ssh_port, private_address})."""
    parts = text.split()
    if not 1 <= len(parts) <= 2:
        raise SettingsError(f"{key}: {text.strip()!r} is not valid: give each server as `address[:ssh_port] "
                            "[private_address]`, servers separated by commas")
    address, _, port = parts[0].partition(":")
    if not (port or "22").isdigit():
        raise SettingsError(f"{key}: {parts[0]!r} has {port!r} for a port, which is not a port number: use e.g. "
                            "203.0.113.5:22")
    data: dict[str, object] = {"ssh_hostname": address, "ssh_port": int(port or "22")}
    if len(parts) == 2:
        data["private_address"] = parts[1]
    return parts[0], data


def servers(app: list, db=None, common: dict | None = None) -> dict[str, list]:
    """Several servers: the app servers (one or more) and the one db server, each a pyinfra host
    (`name` or `(name, data)`), given the role data that ties them together: each app server's
    database_host is the db server's private address, and the db server lets in only the app servers'.
    Without a db server (db=None) the database is external (a managed Postgres, DATABASE_URL in .env) and the
    first app server takes the backups.

        app_servers, db_servers = servers(app=[("web1.example.com", {"private_address": "10.0.0.5"}),
                                               ("web2.example.com", {"private_address": "10.0.0.6"})],
                                          db=("db1.example.com", {"private_address": "10.0.0.7"})).values()

    With a db server, every private address is an IPv4 address (the db server's packet filter takes no host
    names): an app server listed without one is refused when its SSH address is a host name.
    """
    def host(entry) -> tuple[str, dict]:
        name, data = (entry, {}) if isinstance(entry, str) else entry
        data = {**(common or {}), **data}
        data.setdefault("ssh_hostname", name)
        data.setdefault("private_address", data["ssh_hostname"])
        return name, data

    apps = [host(e) for e in app]
    if not apps:
        raise SettingsError("no app server listed: give at least one in VPSKIT_APP_HOSTS (or app_servers)")
    if db is None:
        names = [n for n, _ in apps]
        if len(set(names)) != len(names):
            raise SettingsError(f"a server is listed twice ({', '.join(names)}): list each app server once")
        return {"app_servers": [(n, {**d, "role": "app", "database_host": "external"}) for n, d in apps],
                "db_servers": []}
    db_name, db_data = host(db)
    names = [n for n, _ in apps] + [db_name]
    if len(set(names)) != len(names):
        raise SettingsError(f"a server is listed twice ({', '.join(names)}): each host has one role")
    clients = ",".join(str(d["private_address"]) for _, d in apps)
    # Here, before any server is reached: a private address left out is the SSH address, often a host name,
    # which the db server's packet filter does not take (the same line as from the settings' own check).
    CHECKS["database_clients"]("database_clients", clients)
    db_private_address("private_address", db_data["private_address"])
    return {"app_servers": [(n, {**d, "role": "app", "database_host": db_data["private_address"]}) for n, d in apps],
            "db_servers": [(db_name, {**db_data, "role": "db", "database_clients": clients})]}
