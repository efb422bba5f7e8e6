"""Where the hosts come from: the environment or the operator's .env (environment wins), else the local
demo VPS of the test bed. Every VPSKIT_<SETTING> variable (e.g. VPSKIT_IMAGE_TRANSPORT=ssh) becomes host
data, overriding group_data."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values

from vpskit import preflight
from vpskit.envfile import env_file_path
from vpskit.settings import CHECKS, SettingsError

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
    """{group: [(name, data)]} for inventory.py."""
    cfg = _config()
    data: dict[str, object] = {}
    for key in CHECKS:
        if f"VPSKIT_{key.upper()}" in cfg:
            data[key] = cfg[f"VPSKIT_{key.upper()}"]
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
    group = cfg.get("VPSKIT_GROUP", "production")
    if group not in GROUPS:
        raise SettingsError(f"VPSKIT_GROUP={group!r} is not valid: use production or staging")
    try:
        port = int(cfg.get("VPSKIT_SSH_PORT", "22"))
    except ValueError:
        raise SettingsError(f"VPSKIT_SSH_PORT={cfg['VPSKIT_SSH_PORT']!r} is not a port number: use e.g. 22") from None
    data.update(
        ssh_hostname=host,
        ssh_port=port,
        ssh_user=cfg.get("VPSKIT_SSH_USER", "deploy"),
        # Host keys are always verified; first contact with a new server is an explicit opt-in.
        ssh_strict_host_key_checking="accept-new" if cfg.get("VPSKIT_SSH_ACCEPT_NEW", "").lower() == "true" else "yes",
    )
    if cfg.get("VPSKIT_SSH_KEY"):
        data["ssh_key"] = cfg["VPSKIT_SSH_KEY"]
    if cfg.get("VPSKIT_SSH_KNOWN_HOSTS"):
        data["ssh_known_hosts_file"] = cfg["VPSKIT_SSH_KNOWN_HOSTS"]
    name = host if port == 22 else f"{host}:{port}"
    preflight.check(group, data)
    return {g: ([(name, data)] if g == group else []) for g in GROUPS}
