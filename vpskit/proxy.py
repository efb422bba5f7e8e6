"""The bundled proxy: one per server, shared by every app vpskit deploys there. Pure functions; the
operation that applies them is operations.proxy_serving, the per-release switch is vpskit/server/proxy.py."""

from __future__ import annotations

import hashlib
import shlex

from vpskit import memory, settings
from vpskit.render import render
from vpskit.server.proxy import CONTAINER, PROXY_DIR

DIR = str(PROXY_DIR)  # fixed, whatever app_root: every app on the server must find the same proxy
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
    return render("proxy/docker-compose.yml", ports=ports, proxy_image=image, acme_ca_root=acme_ca_root,
                  proxy_memory_mb=memory.PROXY_MB)


def caddyfile(s: dict) -> str:
    return render("proxy/Caddyfile", **s)


def state_command() -> str:
    """Prints the hashes of the proxy's compose file and Caddyfile, each app's ports file, whether the proxy
    runs, and the TCP ports something listens on (to tell a free port from a taken one)."""
    d = q(DIR)
    digest = "sha256sum < {f} | cut -c1-64"
    return (f"if [ -f {d}/docker-compose.yml ]; then echo compose $({digest.format(f=d + '/docker-compose.yml')}); fi; "
            f"if [ -f {d}/etc/Caddyfile ]; then echo caddyfile $({digest.format(f=d + '/etc/Caddyfile')}); fi; "
            f"{ports_lines(DIR)}; "
            f"echo running $(docker inspect -f '{{{{.State.Running}}}}' {CONTAINER} 2>/dev/null || echo false); "
            "ss -Hltn 2>/dev/null | awk '{print \"listen\", $4}'; "
            "docker ps --format '{{.ID}} {{.Label \"com.docker.compose.project\"}} {{.Ports}}' 2>/dev/null "
            "| grep -- '->' | sed 's/^/held /'; true")


def ports_lines(folder: str, but: str = "") -> str:
    """Prints `ports APP PORT...` per app's ports file in the proxy's folder `folder` (but app `but`), in byte
    order, without trailing blanks: what the state shows, and what a change compares before it writes."""
    d = q(folder)
    skip = f" && [ \"${{f##*/}}\" != {q(but)} ]" if but else ""
    return (f"for f in {d}/ports/*; do [ -f \"$f\" ]{skip} && echo \"ports ${{f##*/}} $(tr '\\n' ' ' < \"$f\")\" "
            "| sed 's/ *$//'; done")


def others_digest(state: dict, app: str) -> str:
    """The hash of the other apps' `ports` lines as the state read them (ports_lines with `but=app`): a change
    applies only while they are still the same on the server, so two deploys at once never drop a port."""
    lines = "".join(f"{state['ports_lines'][a]}\n" for a in sorted(state["ports_lines"]) if a != app)
    return hashlib.sha256(lines.encode()).hexdigest()


def parse_state(lines) -> dict:
    state: dict = {"compose": "", "caddyfile": "", "ports": {}, "ports_lines": {}, "running": False,
                   "listening": set(), "held": []}
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] in ("compose", "caddyfile") and len(parts) == 2:
            state[parts[0]] = parts[1]
        elif parts[0] == "ports" and len(parts) >= 2:
            state["ports"][parts[1]] = tuple(parts[2:])
            state["ports_lines"][parts[1]] = line.rstrip()
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


CHANGED = "vpskit proxy: another deploy changed the proxy's ports meanwhile"  # up_command's word to try again


def up_command(files: dict[str, str], app: str, others: str, folder: str = DIR) -> str:
    """Writes the proxy's files (path relative to the folder -> text) and brings the proxy up; compose recreates
    it only when its compose file changed. A changed Caddyfile alone is reloaded, gracefully. Under the proxy's
    lock (the server program's Proxy.route_to takes it too), and only while the other apps' ports are the ones this
    plan saw (`others`: others_digest), else it prints CHANGED and changes nothing. When compose cannot bring the
    proxy up (a port taken), the files before come back (the next deploy tries again) and it exits non-zero with
    compose's reason."""
    import base64

    d = q(folder)
    paths = [q(f"{folder}/{path}") for path in files]
    writes = " && ".join(
        f"mkdir -p {q(folder + '/' + path.rsplit('/', 1)[0]) if '/' in path else d} && "
        f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > {q(folder + '/' + path)}.new && "
        f"mv -f {q(folder + '/' + path)}.new {q(folder + '/' + path)}"
        for path, text in files.items()
    )
    keep = " ".join(f"if [ -f {p} ]; then cp -p {p} {p}.before; else rm -f {p}.before; fi;" for p in paths)
    back = " ".join(f"if [ -f {p}.before ]; then mv -f {p}.before {p}; else rm -f {p}; fi;" for p in paths)
    running = f"docker inspect -f '{{{{.State.Running}}}}' {CONTAINER} 2>/dev/null"
    reload = f"docker exec {CONTAINER} caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile"
    busy = "vpskit: the proxy stayed locked by another deploy for 300s: nothing was changed; deploy again"
    failed = ("vpskit: the proxy could not be brought up with these ports (compose's reason above): its files are "
              "as they were; free the port (or change publish_port) and deploy again")
    return (f"mkdir -p {d}/etc/sites {d}/ports && exec 7>>{d}/.lock && "
            f"{{ flock -w 300 7 || {{ echo {q(busy)} >&2; exit 1; }}; }} && "
            f"now=$(export LC_ALL=C; {{ {ports_lines(folder, but=app)}; }} | sha256sum | cut -c1-64) && "
            f"if [ \"$now\" != {q(others)} ]; then echo {q(CHANGED)}; exit 75; fi && "
            f"{keep} {writes} && cd {d} && "
            "out=$(docker compose up -d --quiet-pull 2>&1); rc=$?; "
            "printf '%s\\n' \"$out\" | grep -v -e ' Running$' -e '^$'; "
            f"if [ \"$rc\" != 0 ]; then {back} docker compose up -d >/dev/null 2>&1; echo {q(failed)} >&2; exit 1; fi; "
            f"rm -f {' '.join(p + '.before' for p in paths)}; "
            f"for i in $(seq 30); do [ \"$({running})\" = true ] && {reload} >/dev/null 2>&1 && exit 0; sleep 1; done; "
            f"docker logs --tail 20 {CONTAINER} >&2; "
            f"echo 'vpskit: the proxy did not start (its log above)' >&2; exit 1")
