"""Pure functions that build the shell command lines vpskit runs on a server. Tested as strings; the code
that runs them over SSH lives in facts.py and operations.py."""

from __future__ import annotations

import shlex

q = shlex.quote


def compose(app_dir: str, *args: str) -> str:
    """`docker compose` in the app's directory, so .env and the project name are picked up from there."""
    return f"cd {q(app_dir)} && docker compose {' '.join(q(a) for a in args)}"


def compose_up(app_dir: str, timeout: int) -> str:
    """Creates or updates the stack and waits until every service is healthy (or fails after `timeout`)."""
    return compose(app_dir, "up", "-d", "--remove-orphans", "--wait", "--wait-timeout", str(timeout))


def compose_state(app_dir: str, project: str) -> str:
    """Prints the desired config hash per service, then one line per existing container of the project:
    service, container id, config hash, image id, state, health."""
    fmt = (
        '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}} '
        '{{index .Config.Labels "com.docker.compose.config-hash"}} {{.Image}} {{.State.Status}} '
        "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
    )
    ids = f"docker ps -aq --filter label=com.docker.compose.project={q(project)}"
    return (
        f"if [ -f {q(app_dir)}/docker-compose.yml ] && command -v docker >/dev/null; then "
        f"(cd {q(app_dir)} && docker compose config --hash '*' 2>/dev/null | sed 's/^/desired /'); "
        f"for c in $({ids}); do docker inspect -f {q(fmt)} $c | sed 's/^/container /'; done; fi"
    )


def image_id(ref: str) -> str:
    """Prints the image id for `ref`, or nothing when the server does not have it (or has no Docker)."""
    return f"docker image inspect -f '{{{{.Id}}}}' {q(ref)} 2>/dev/null || true"


def image_load() -> str:
    """Reads a `docker save` stream (optionally gzip'd) on stdin into the server's image store."""
    return "docker load"


def image_pull(ref: str) -> str:
    return f"docker pull --quiet {q(ref)}"


def unhealthy_report(app_dir: str, lines: int = 40) -> str:
    """What to show when the stack does not become healthy: the state and the last log lines."""
    return compose(app_dir, "ps", "-a") + " ; " + compose(app_dir, "logs", "--no-color", "--tail", str(lines))
