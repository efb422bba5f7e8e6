"""pyinfra facts vpskit reads from a server: what Docker has (images) and runs (the compose stack)."""

from __future__ import annotations

from pyinfra.api import FactBase

from vpskit import commands


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
    """The running stack of a compose project: per service the desired config hash (from the files on the
    server) and its container (id, config hash, image id, state, health).

    host.get_fact(ComposeStack, app_dir="/opt/example", project="example", _sudo=True) ->
        {"app": {"desired": "ab12..", "container": "c0ff..", "hash": "ab12..", "image": "sha256:..",
                 "state": "running", "health": "healthy"}, ...}
    """

    def command(self, app_dir: str, project: str) -> str:
        return commands.compose_state(app_dir, project)

    def process(self, output) -> dict[str, dict[str, str]]:
        return parse_compose_state(output)

    def default(self) -> dict:
        return {}


def parse_compose_state(lines) -> dict[str, dict[str, str]]:
    services: dict[str, dict[str, str]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "desired":
            services.setdefault(parts[1], {})["desired"] = parts[2]
        elif len(parts) == 7 and parts[0] == "container":
            _, service, cid, chash, image, state, health = parts
            services.setdefault(service, {}).update(
                container=cid, hash=chash, image=image, state=state, health=health
            )
    return services
