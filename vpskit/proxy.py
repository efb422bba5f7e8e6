"""The bundled proxy: one per server, shared by every app vpskit deploys there. Pure functions; the
operation that applies them is operations.proxy_serving, the per-release switch is files/proxy.sh."""

from __future__ import annotations

import shlex

from vpskit import settings
from vpskit.render import render

DIR = "/opt/vpskit-proxy"  # fixed, whatever app_root: every app on the server must find the same proxy
CONTAINER = "vpskit-proxy"  # container and network name (files/proxy.sh and the app template use it too)
q = shlex.quote


bundled = settings.bundled_proxy


def app_ports(s: dict) -> tuple[str, ...]:
    """The proxy's published ports this app needs, as compose `ports` entries."""
    ports = []
    if s["domain"] and not s["proxy_network"]:
        ports += ["80:80", "443:443"]
    if s["publish_port"]:
        ports.append(f"{s['publish_host']}:{s['publish_port']}:{s['publish_port']}")
    return tuple(ports)


def host_port(entry: str) -> int:
    """80 for "80:80", 3000 for "127.0.0.1:3000:3000"."""
    return int(entry.split(":")[-2])


def union(ports_by_app: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Every app's ports once, in a stable order (so the rendered compose file only changes with the set)."""
    return tuple(sorted({p for ports in ports_by_app.values() for p in ports}, key=lambda p: (host_port(p), p)))


def compose_file(ports: tuple[str, ...], image: str, acme_ca_root: str) -> str:
    return render("proxy/docker-compose.yml", ports=ports, proxy_image=image, acme_ca_root=acme_ca_root)


def caddyfile(s: dict) -> str:
    return render("proxy/Caddyfile", **s)


def state_command() -> str:
    """Prints the hashes of the proxy's compose file and Caddyfile, each app's ports file, whether the proxy
    runs, and the TCP ports something listens on (to tell a free port from a taken one)."""
    d = q(DIR)
    digest = "sha256sum < {f} | cut -c1-64"
    return (f"if [ -f {d}/docker-compose.yml ]; then echo compose $({digest.format(f=d + '/docker-compose.yml')}); fi; "
            f"if [ -f {d}/etc/Caddyfile ]; then echo caddyfile $({digest.format(f=d + '/etc/Caddyfile')}); fi; "
            f"for f in {d}/ports/*; do [ -f \"$f\" ] && echo \"ports ${{f##*/}} $(tr '\\n' ' ' < \"$f\")\"; done; "
            f"echo running $(docker inspect -f '{{{{.State.Running}}}}' {CONTAINER} 2>/dev/null || echo false); "
            "ss -Hltn 2>/dev/null | awk '{print \"listen\", $4}'; "
            "docker ps --format '{{.ID}} {{.Label \"com.docker.compose.project\"}} {{.Ports}}' 2>/dev/null "
            "| grep -- '->' | sed 's/^/held /'; true")


def parse_state(lines) -> dict:
    state: dict = {"compose": "", "caddyfile": "", "ports": {}, "running": False, "listening": set(), "held": []}
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] in ("compose", "caddyfile") and len(parts) == 2:
            state[parts[0]] = parts[1]
        elif parts[0] == "ports" and len(parts) >= 2:
            state["ports"][parts[1]] = tuple(parts[2:])
        elif parts[0] == "running":
            state["running"] = parts[1:] == ["true"]
        elif parts[0] == "listen" and len(parts) == 2:
            state["listening"].add(int(parts[1].rsplit(":", 1)[1]))
        elif parts[0] == "held" and len(parts) >= 3:
            # "held ID PROJECT 127.0.0.1:3000->3000/tcp, ...": a container publishing ports itself
            ports: set[int] = set()
            for p in " ".join(parts[3:]).split(", "):
                if "->" in p:  # docker ps shows consecutive ports as a range: 127.0.0.1:3000-3001->3000-3001/tcp
                    first, _, last = p.split("->")[0].rsplit(":", 1)[1].partition("-")
                    ports.update(range(int(first), int(last or first) + 1))
            state["held"].append((parts[1], parts[2], ports))
    return state


def held_by_app(app: str, wanted: tuple[str, ...], held: list) -> list[str]:
    """Containers of `app` itself that publish a port the proxy now needs: an install from before the proxy,
    where the app container published its port directly."""
    ports = {host_port(p) for p in wanted}
    return [cid for cid, project, published in held if project == app and published & ports]


def taken(wanted: tuple[str, ...], published: tuple[str, ...], listening: set[int]) -> list[int]:
    """Ports this app wants that the proxy does not publish yet and something else already listens on."""
    ours = {host_port(p) for p in published}
    return sorted(({host_port(p) for p in wanted} - ours) & listening)


def up_command(files: dict[str, str]) -> str:
    """Writes the proxy's files (path relative to DIR -> text) and brings the proxy up; compose recreates it
    only when its compose file changed. A changed Caddyfile alone is reloaded, gracefully."""
    import base64

    writes = " && ".join(
        f"mkdir -p {q(DIR + '/' + path.rsplit('/', 1)[0]) if '/' in path else q(DIR)} && "
        f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > {q(DIR + '/' + path)}.new && "
        f"mv -f {q(DIR + '/' + path)}.new {q(DIR + '/' + path)}"
        for path, text in files.items()
    )
    running = f"docker inspect -f '{{{{.State.Running}}}}' {CONTAINER} 2>/dev/null"
    reload = f"docker exec {CONTAINER} caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile"
    return (f"mkdir -p {q(DIR)}/etc/sites {q(DIR)}/ports && {writes} && cd {q(DIR)} && "
            f"docker compose up -d --quiet-pull 2>&1 | grep -v ' Running$'; "
            f"for i in $(seq 30); do [ \"$({running})\" = true ] && {reload} >/dev/null 2>&1 && exit 0; sleep 1; done; "
            f"docker logs --tail 20 {CONTAINER} >&2; "
            f"echo 'vpskit: the proxy did not start (its log above)' >&2; exit 1")
