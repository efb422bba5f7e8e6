"""The app's root-only configuration on the server, /etc/vpskit/<app>/offsite.env, written by deploy.py
(vpskit/offsite.py renders it as `export NAME=<shell-quoted value>` lines): read here, once, for the server
program (alerts, backups and offsite copies, restores, the health check)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path


def path(app: str) -> Path:
    return Path(os.environ.get("VPSKIT_OFFSITE_CONF", f"/etc/vpskit/{app}/offsite.env"))


def parse(text: str) -> dict[str, str]:
    """NAME -> value of the `export NAME=value` lines (values unquoted as the shell would)."""
    values = {}
    for line in text.splitlines():
        if not line.startswith("export ") or "=" not in line:
            continue
        name, _, raw = line[len("export "):].partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            continue
        values[name.strip()] = words[0] if words else ""
    return values


def read(app: str) -> dict[str, str]:
    try:
        return parse(path(app).read_text())
    except OSError:
        return {}


def value(app: str, name: str) -> str:
    return read(app).get(name, "")
