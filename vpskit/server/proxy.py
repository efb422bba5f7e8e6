"""The bundled proxy (one per server, shared by every app vpskit deploys there), as a release drives it. It owns
the published ports; each app has one route file in sites/, written from the app's proxy-route template with its
serving container as upstream. `caddy reload` is graceful and atomic: a route that cannot load leaves the
running configuration as it was."""

from __future__ import annotations

import json
from pathlib import Path

from .effects import Effects
from .locks import Lock

PROXY_DIR = Path("/opt/vpskit-proxy")
CONTAINER = "vpskit-proxy"


def route_text(template: str, upstream: str) -> str:
    return template.replace("@UPSTREAM@", upstream)


def in_flight(upstreams_json: str, upstream: str) -> int:
    """Requests the proxy still has open to `upstream` (host:port), from its admin API's upstreams list; 0 when
    it cannot be read."""
    try:
        listed = json.loads(upstreams_json or "[]")
    except ValueError:
        return 0
    return sum(int(u.get("num_requests", 0)) for u in listed if isinstance(u, dict) and u.get("address") == upstream)


class Proxy:
    def __init__(self, fx: Effects, root: Path = PROXY_DIR):
        self.fx, self.root = fx, root

    def reload(self) -> bool:
        r = self.fx.run("docker", "exec", CONTAINER, "caddy", "reload", "--config", "/etc/caddy/Caddyfile",
                        "--adapter", "caddyfile")
        if not r.ok:
            for line in [x for x in (r.out + r.err).splitlines() if '"level":"info"' not in x][-5:]:
                self.fx.say(line)
        return r.ok

    def route_to(self, template: str, app: str, upstream: str) -> bool:
        """The app's route points at `upstream`, or stays as it was (then False, Caddy's reason in the log). Under
        the proxy's lock, shared with the deploy's changes to its ports (vpskit/proxy.py)."""
        sites = self.root / "etc" / "sites"
        sites.mkdir(parents=True, exist_ok=True)
        lock = Lock(self.root / ".lock", self.fx)
        if lock.take(120, f"route of {app}", "the proxy's lock"):
            self.fx.say("the proxy stayed locked by another deploy for 120s")
            return False
        try:
            site = sites / f"{app}.caddy"
            before = site.read_text() if site.exists() else None
            tmp = site.with_name(site.name + ".new")
            tmp.write_text(route_text(template, upstream))
            tmp.replace(site)
            if self.reload():
                return True
            if before is None:
                site.unlink(missing_ok=True)
            else:
                site.write_text(before)
            self.reload()
            return False
        finally:
            lock.release()

    def in_flight(self, upstream: str) -> int:
        r = self.fx.run("docker", "exec", CONTAINER, "wget", "-q", "-T", "5", "-O", "-",
                        "http://localhost:2019/reverse_proxy/upstreams")
        return in_flight(r.out if r.ok else "", upstream)
