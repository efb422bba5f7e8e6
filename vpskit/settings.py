"""One place per setting: its type and check. Defaults and their one-line docs live in group_data/all.py;
this module reads them from there, so the two cannot drift apart.

    settings = load(host.data)        # raises SettingsError naming the key and the fix
"""

from __future__ import annotations

import ast
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = ROOT / "group_data" / "all.py"


class SettingsError(ValueError):
    """A bad setting: the message names the key and how to fix it."""


_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_MEM = re.compile(r"^[0-9]+(\.[0-9]+)?[bkmg]$")
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_ABS = re.compile(r"^/[A-Za-z0-9._/-]*$")
_ADDRESS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _str(pattern: re.Pattern | None = None, hint: str = "", empty: bool = False):
    def check(key: str, value: Any) -> str:
        value = "" if value is None else str(value)
        if value == "" and empty:
            return value
        if pattern is not None and not pattern.match(value):
            raise SettingsError(f"{key}={value!r} is not valid: {hint}")
        return value

    return check


def _int(lo: int, hi: int):
    def check(key: str, value: Any) -> int:
        try:
            number = int(str(value))
        except ValueError:
            raise SettingsError(f"{key}={value!r} is not a whole number: set it between {lo} and {hi}") from None
        if not lo <= number <= hi:
            raise SettingsError(f"{key}={number} is out of range: set it between {lo} and {hi}")
        return number

    return check


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{key}={value!r} is not a boolean: use true or false")


def _choice(*options: str):
    def check(key: str, value: Any) -> str:
        if str(value) not in options:
            shown = ", ".join(o or '""' for o in options)
            raise SettingsError(f"{key}={value!r} is not valid: use one of {shown}")
        return str(value)

    return check


def _ipv4_list(key: str, value: Any) -> str:
    """Comma-separated IPv4 addresses or networks (10.0.0.5, 10.0.1.0/24). No host names: the db server's
    packet filter takes addresses, and a name looked up as it loads at boot may not resolve then."""
    items = [i.strip() for i in ("" if value is None else str(value)).split(",")]
    if items == [""]:
        return ""
    for item in items:
        try:
            ipaddress.IPv4Network(item, strict=False)
        except ValueError:
            raise SettingsError(f"{key}: {item!r} is not an IPv4 address: give each app server's private IPv4 "
                                "address after its SSH address in VPSKIT_APP_HOSTS, e.g. \"203.0.113.5 10.0.0.5\" "
                                "(or private_address in inventory.py's app_servers)") from None
    return ",".join(items)


def db_private_address(key: str, value: Any) -> str:
    """A db server's private address: an IPv4 address (Docker publishes postgres on it; no host name)."""
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise SettingsError(f"{key}: {str(value)!r} is not an IPv4 address: a db server publishes postgres on its "
                            "private IPv4 address; give it after the db server's SSH address in VPSKIT_DB_HOST, "
                            "e.g. \"203.0.113.7 10.0.0.7\" (or in inventory.py's db_servers)") from None


def _cpus(key: str, value: Any) -> str:
    try:
        cpus = float(str(value))
    except ValueError:
        raise SettingsError(f"{key}={value!r} is not a number of CPUs: use e.g. 0.5 or 1.0") from None
    if not 0.01 <= cpus <= 256:
        raise SettingsError(f"{key}={value!r} is out of range: use between 0.01 and 256 CPUs")
    return str(value)


CHECKS = {
    "app_name": _str(_NAME, "use lowercase letters, digits, - and _ (start with a letter, at most 40)"),
    "app_path": _str(re.compile(r".+"), "give the path of the app to deploy"),
    "app_version": _str(_TAG, "use letters, digits, '.', '-' and '_' (a Docker tag)", empty=True),
    "app_port": _int(1, 65535),
    "package_manager": _choice("", "npm", "pnpm", "yarn"),
    "app_root": _str(_ABS, "use an absolute path such as /opt"),
    "firewall": _bool,
    "docker_source": _choice("distro", "docker"),
    "swap_size": _str(re.compile(r"^(auto|0|[0-9]+[mg])$"), "use auto, 0 (none) or a size such as 1g or 512m"),
    "swappiness": _int(0, 100),
    "unattended_upgrades": _bool,
    "auto_reboot": _bool,
    "auto_reboot_time": _str(re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$"), "use a time such as 04:30"),
    "journal_max_use": _str(re.compile(r"^[0-9]+[KMG]$"), "use a size such as 200M or 1G"),
    "ssh_keys_only": _bool,
    "publish_host": _str(re.compile(r"^(127\.0\.0\.1|0\.0\.0\.0|[0-9]{1,3}(\.[0-9]{1,3}){3})$"),
                         "use 127.0.0.1 (default), 0.0.0.0 or one of the server's IPv4 addresses"),
    "publish_port": _int(0, 65535),
    "domain": _str(_DOMAIN, "use a domain name such as example.com (lowercase, no scheme or path)", empty=True),
    "proxy_network": _str(re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"), "use a Docker network name", empty=True),
    "proxy_image": _str(_IMAGE, "use an image reference such as caddy:2"),
    "acme_email": _str(re.compile(r"^[^@\s]+@[^@\s]+$"), "use an e-mail address such as ops@example.com", empty=True),
    "acme_ca": _str(re.compile(r"^https://[^\s]+$"), "use the https:// URL of an ACME directory", empty=True),
    "acme_ca_root": _str(_ABS, "use an absolute path on the server, such as /etc/vpskit/acme-root.pem", empty=True),
    "public_url": _str(re.compile(r"^https?://[^\s]+$"), "use a full URL such as https://example.com", empty=True),
    "traefik_labels": _bool,
    "max_body_size": _str(re.compile(r"^(auto|[0-9]+[kmg])$"), "use auto (the app's upload limit) or a size such as "
                          "100m or 1g"),
    "node_image": _str(_IMAGE, "use an image reference such as node:22-bookworm-slim, or \"\" to pick the one the "
                             "app asks for", empty=True),
    "postgres_image": _str(_IMAGE, "use an image reference such as postgres:17"),
    "build_on": _choice("local", "server"),
    "build_database": _choice("auto", "always", "never"),
    "image_transport": _choice("registry", "ssh"),
    "keep_images": _int(1, 50),
    "ship_with": _choice("layers", "stream"),
    "registry_image": _str(_IMAGE, "use an image reference such as registry:2"),
    "registry_port": _int(1024, 65535),
    "build_cache": _str(re.compile(r"^type=[a-z]+(,[a-z_-]+=[A-Za-z0-9_./:-]+)*$"), "use a BuildKit cache such as "
                        "type=gha,scope=vpskit (or empty)", empty=True),
    "postgres_user": _str(re.compile(r"^[a-z_][a-z0-9_]{0,62}$"), "use lowercase letters, digits and _"),
    "postgres_db": _str(re.compile(r"^[a-z_][a-z0-9_]{0,62}$"), "use lowercase letters, digits and _"),
    "app_memory_limit": _str(_MEM, "use a Docker memory size such as 512m or 1g"),
    "app_cpu_limit": _cpus,
    "db_memory_limit": _str(_MEM, "use a Docker memory size such as 256m or 1g"),
    "db_cpu_limit": _cpus,
    "db_stop_grace_period": _str(_DURATION, "use a duration such as 60s or 2m"),
    "backup_root": _str(_ABS, "use an absolute path such as /var/backups"),
    "backup_keep_daily": _int(1, 3650),
    "backup_keep_weekly": _int(0, 520),
    "backup_keep_monthly": _int(0, 120),
    "backup_schedule": _str(re.compile(r"^[A-Za-z0-9*:/,. -]+$"), "use a systemd OnCalendar value such as "
                            "'*-*-* 03:15:00' or daily, or empty for no timer", empty=True),
    "backup_before_update": _bool,
    "backup_offsite": _str(re.compile(r"^(sftp:[^\s'\"]+|s3:https?://[^\s'\"]+/[^\s'\"]+|/[A-Za-z0-9._/-]+)$"),
                           "use sftp:user@host:/path, s3:https://host/bucket or an absolute path (or empty)",
                           empty=True),
    "offsite_max_age": _str(re.compile(r"^[0-9]+[smhd]$"), "use a duration such as 2d, 36h or 90m"),
    "drill_schedule": _str(re.compile(r"^[A-Za-z0-9*:/,. -]+$"), "use a systemd OnCalendar value such as "
                           "'Sun *-*-* 04:45:00' or weekly, or empty for no drill", empty=True),
    "health_schedule": _str(re.compile(r"^[A-Za-z0-9*:/,. -]+$"), "use a systemd OnCalendar value such as "
                            "hourly or '*:0/15', or empty for no scheduled check", empty=True),
    "notify_releases": _bool,
    "media_bucket": _str(re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"), "use the bucket's name (lowercase "
                         "letters, digits, '.' and '-'), or empty for media on the app server's disk", empty=True),
    "media_endpoint": _str(re.compile(r"^https?://[^\s'\"/]+(/[^\s'\"]*)?$"), "use the endpoint's URL, such as "
                           "https://fsn1.your-objectstorage.com (or empty for AWS S3)", empty=True),
    "media_region": _str(re.compile(r"^[a-z0-9-]{1,40}$"), "use a region name such as us-east-1"),
    "role": _choice("all", "app", "db"),
    "private_address": _str(_ADDRESS, "use an IPv4 address (or, on an app server, a host name)", empty=True),
    "database_host": _str(_ADDRESS, "use the db server's private IPv4 address or host name, or external",
                          empty=True),
    "database_clients": _ipv4_list,
    "rollout_batch": _int(1, 100),
    "jobs_worker": _choice("auto", "off"),
    "jobs_interval": _int(1, 3600),
    "page_cache": _choice("shared", "local"),
    "log_max_size": _str(_MEM, "use a size such as 10m"),
    "log_max_file": _int(1, 100),
    "health_timeout": _int(10, 3600),
    "drain_timeout": _int(0, 600),
    "lock_timeout": _int(0, 7200),
}


@dataclass(frozen=True)
class Default:
    key: str
    value: Any
    doc: str
    section: str


def defaults() -> list[Default]:
    """The defaults of group_data/all.py with their one-line comments and section headings, in order."""
    out, section = [], ""
    lines = DEFAULTS_FILE.read_text().splitlines()
    for node in ast.parse(DEFAULTS_FILE.read_text()).body:
        if not isinstance(node, ast.Assign):
            continue
        for prev in reversed(lines[: node.lineno - 1]):
            if prev.startswith("# ---"):
                section = prev.removeprefix("# ---").strip()
                break
        line = lines[node.lineno - 1]
        doc = line.split("#", 1)[1].strip() if "  # " in line else ""
        out.append(Default(node.targets[0].id, ast.literal_eval(node.value), doc, section))
    return out


def load(data: Any) -> dict[str, Any]:
    """Validated settings from pyinfra host data (or any mapping); raises SettingsError on the first bad key."""
    get = data.get if hasattr(data, "get") else lambda k, d=None: getattr(data, k, d)
    settings: dict[str, Any] = {}
    for default in defaults():
        value = get(default.key, None)
        settings[default.key] = CHECKS[default.key](default.key, default.value if value is None else value)
    _check_together(settings)
    return settings


def _check_together(s: dict[str, Any]) -> None:
    if s["traefik_labels"] and not (s["proxy_network"] and s["domain"]):
        raise SettingsError("traefik_labels=true needs proxy_network and domain: set both, or traefik_labels=false")
    if s["publish_port"] in (22, 80, 443) and s["publish_host"] != "127.0.0.1":
        raise SettingsError(f"publish_port={s['publish_port']} clashes with SSH or the reverse proxy on the server: "
                            "pick another port, e.g. 3000")
    if s["role"] == "app" and not s["database_host"]:
        raise SettingsError("role=app needs database_host, the db server's private address: list the db server "
                            "in VPSKIT_DB_HOST (or in inventory.py's db_servers), or put a managed Postgres's "
                            "DATABASE_URL in .env")
    if s["role"] == "db" and not s["private_address"]:
        raise SettingsError("role=db needs private_address, the address the app servers reach it at: give it after "
                            "the SSH address in VPSKIT_DB_HOST (or in inventory.py)")
    if s["role"] == "db":
        db_private_address("private_address", s["private_address"])
    if s["role"] == "db" and not s["database_clients"]:
        raise SettingsError("role=db needs database_clients, the app servers' private addresses: list them in "
                            "VPSKIT_APP_HOSTS (or in inventory.py's app_servers)")
    if s["publish_port"] == 0 and not (s["proxy_network"] or s["domain"]):
        raise SettingsError("publish_port=0 leaves the app unreachable: set publish_port, domain or proxy_network")


def seconds(duration: str) -> int:
    """A duration setting ("2d", "36h", "90m", "30s") in seconds."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration[-1]]


def bundled_proxy(s: dict[str, Any]) -> bool:
    """Whether the server's bundled proxy serves the app: it has a port to publish, or a domain that no proxy
    of the operator's own (proxy_network) takes care of."""
    return bool(s["publish_port"] or (s["domain"] and not s["proxy_network"]))
