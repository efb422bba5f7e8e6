"""pyinfra operations of vpskit: each reads facts and yields commands only where the server differs."""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, operation

from vpskit import commands, images
from vpskit.facts import ComposeStack, DockerImageId


@operation()
def image_present(ref: str, transport: str = "ssh", build=None):
    """
    Ensure the server has image ``ref``.

    + ref: image reference, e.g. ``example:3f9c2a1`` or ``postgres:17``
    + transport: ``ssh`` ships the image from this machine over the SSH connection (no registry needed);
      ``registry`` pulls it on the server when absent
    + build: for ``ssh``, a ``images.LocalBuild`` that makes ``ref`` on this machine when it is missing

    **Example:**

    .. code:: python

        image_present(name="Database image on the server", ref="postgres:17", transport="ssh", _sudo=True)
    """
    current = host.get_fact(DockerImageId, ref=ref)
    if transport == "registry":
        if current:
            host.noop(f"image {ref} is on the server")
            return
        yield commands.image_pull(ref)
        return

    local = images.local_image_id(ref)
    if not local and build is None:
        raise ValueError(f"image {ref} is not on this machine: build or pull it here first")
    if local and local == current:
        host.noop(f"image {ref} ({local[7:19]}) is on the server")
        return
    if not local:
        yield FunctionCommand(_build, (build,), {})
    yield FunctionCommand(_ship, (ref,), {})


def _build(state, host, build) -> bool:
    try:
        build.run()
    except RuntimeError as err:
        logger.error(f"{host.print_prefix}{err}")
        return False
    return True


def _ship(state, host, ref: str) -> bool:
    return images.ship_over_ssh(host, ref)


@operation()
def stack_applied(app_dir: str, project: str, images_by_service: dict[str, str], timeout: int = 180,
                  url: str = ""):
    """
    Bring the compose stack in ``app_dir`` to its desired state and wait until every service is healthy.

    + app_dir: directory on the server holding docker-compose.yml and .env
    + project: compose project name (labels of its containers)
    + images_by_service: service name -> image reference the service must run
    + timeout: seconds to wait for health before failing with the services' state and logs
    + url: where the app answers, for the closing message

    Changes nothing when every service has a container that is running with the desired config hash and
    image id; otherwise runs ``docker compose up -d --wait``, which recreates only the services that differ.
    """
    stack = host.get_fact(ComposeStack, app_dir=app_dir, project=project)
    reasons = []
    for service, ref in images_by_service.items():
        current = stack.get(service, {})
        if "container" not in current:
            reasons.append(f"{service}: not created")
        elif current.get("desired") != current.get("hash"):
            reasons.append(f"{service}: configuration changed")
        elif current["image"] != host.get_fact(DockerImageId, ref=ref):
            reasons.append(f"{service}: new image")
        elif current["state"] != "running":
            reasons.append(f"{service}: {current['state']}")
    if not reasons:
        host.noop(f"stack {project}: every service running as configured; the app answers at {url}")
        return
    logger.info(f"{host.print_prefix}stack {project}: {'; '.join(reasons)}; applying and waiting up to {timeout}s")
    up = commands.compose_up(app_dir, timeout)
    yield f"{up} || {{ status=$?; {{ {commands.unhealthy_report(app_dir)} ; }} >&2; exit $status; }}"
    yield FunctionCommand(_announce, (f"stack {project} healthy; the app answers at {url}",), {})


def _announce(state, host, message: str) -> bool:
    logger.info(f"{host.print_prefix}{message}")
    return True
