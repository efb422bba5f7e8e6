"""Which Docker Engine a server runs, or will run once the deploy installs it, and what the compose file may ask
of it. Pure; the fact is facts.DockerEngine, the step steps.plan.

`healthcheck.start_interval` (Engine 25, API 1.44) lets Docker run a container's first health checks every second
while it starts, instead of after the first full `interval` (10 s for the app): a release ends, and `docker ps`
says "healthy", seconds sooner. Compose refuses the key outright on an older Engine ("can't set
healthcheck.start_interval as feature require Docker Engine v25 or later"), so it is written only for an Engine
known to take it.
"""

from __future__ import annotations

import re

START_INTERVAL_MAJOR = 25


def major(version: str) -> int | None:
    """The Engine's major version from a Debian package version: '5:27.3.1-1~debian.13~trixie' -> 27,
    '26.1.5+dfsg1-9+b9' -> 26; None for anything else ('(none)', '')."""
    m = re.match(r"(?:\d+:)?(\d+)\.\d", version.strip())
    return int(m.group(1)) if m else None


def parse(lines: list[str]) -> dict[str, str]:
    """facts.DockerEngine's output (`installed VERSION`, `candidate VERSION`, `os ID VERSION_ID`, the first of
    each) as a dict."""
    out: dict[str, str] = {}
    for line in lines:
        key, _, value = line.strip().partition(" ")
        if key in ("installed", "candidate", "os") and value and key not in out:
            out[key] = value.strip()
    return out


def health_start_interval(source: str, found: dict[str, str]) -> bool:
    """Whether the compose file may set `start_interval`: the Engine installed decides; with none installed yet,
    the one this deploy installs: Docker's own packages (docker_source = "docker") are all 25 or newer, the
    distribution's docker.io is apt's candidate, or, on a server with no package lists yet, the one its release
    ships (Debian 13's is 26.1). Unknown is no: a key the Engine refuses would stop the deploy, while a missing
    one costs seconds."""
    if "installed" in found:
        known = major(found["installed"])
    elif source == "docker":
        return True
    else:
        known = major(found.get("candidate", ""))
        if known is None:
            known = DISTRO_ENGINE.get(found.get("os", ""))
    return known is not None and known >= START_INTERVAL_MAJOR


# docker.io's major in a release's own archive (what apt installs once it has lists), for releases where every
# version the archive ever had takes start_interval. Ubuntu 24.04 is left out: its release pocket has 24.0.
DISTRO_ENGINE = {"debian 13": 26}


FACT_COMMAND = (
    "for p in docker-ce docker.io; do dpkg-query -W -f='${db:Status-Status} ${Version}\\n' \"$p\" 2>/dev/null "
    "| grep '^installed '; done; apt-cache policy docker.io 2>/dev/null | sed -n 's/^ *Candidate: */candidate /p'; "
    "(. /etc/os-release && echo \"os $ID $VERSION_ID\") 2>/dev/null; true"
)
