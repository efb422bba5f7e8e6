"""The bundled proxy (one per server, shared by every app vpskit deploys there), as a release drives it. It owns
the published ports; each app has one route file in sites/, written from the app's proxy-route template with its
serving container as upstream. `caddy reload` is graceful and atomic: a route that cannot load leaves the
running configuration as it was."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from .effects import Effects
from .locks import Lock

PROXY_DIR = Path("/opt/vpskit-proxy")
CONTAINER = "vpskit-proxy"


CLOSED_FOR = ".closed-for"  # in the app's folder: the site was closed for an operation on another server (its name)
RETRY_AFTER = 30  # seconds a closed site asks clients to wait before trying again (Retry-After)


def maintenance_lines(app: str) -> str:
    """What a site block of a closed app starts with: every request but the health routes (so that a monitor
    tells maintenance from down) gets 503, Retry-After and the app's maintenance page; Caddy's other errors (a
    502 while the app is stopped) stay as they are."""
    return ("\t@vpskit_closed not path /api/health /api/health/*\n"
            "\terror @vpskit_closed 503\n"
            "\thandle_errors {\n"
            "\t\t@vpskit_page expression {http.error.status_code} == 503\n"
            "\t\thandle @vpskit_page {\n"
            f"\t\t\theader Retry-After {RETRY_AFTER}\n"
            "\t\t\theader Cache-Control no-store\n"
            "\t\t\troot * /etc/caddy/maintenance\n"
            f"\t\t\trewrite * /{app}.html\n"
            "\t\t\tfile_server\n"
            "\t\t}\n"
            "\t}\n")


def route_text(template: str, upstream: str, closed: str = "") -> str:
    """The app's route from its template, to `upstream`; with `closed` (the app's name), in maintenance: each
    site block (a line that opens a block at the top level) starts with maintenance_lines."""
    text = template.replace("@UPSTREAM@", upstream)
    if not closed:
        return text
    out = []
    for line in text.splitlines(keepends=True):
        out.append(line)
        if line.rstrip().endswith("{") and not line[:1].isspace() and not line.startswith("#"):
            out.append(maintenance_lines(closed))
    return "".join(out)


def upstream_of(route: str) -> str:
    """The serving container a live route names (its first upstream), "" when none."""
    found = re.search(r"^\s*reverse_proxy\s+(\S+)", route, re.M)
    return found.group(1) if found else ""


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

    def site(self, app: str) -> Path:
        return self.root / "etc" / "sites" / f"{app}.caddy"

    def page(self, app: str) -> Path:
        """The app's maintenance page, served while its route is closed; it stays after the app opens again:
        requests the closed route took just before a reload still read it (gone, they got an empty 503)."""
        return self.root / "etc" / "maintenance" / f"{app}.html"

    def closed(self, app: str) -> bool:
        """The app's route answers with the maintenance page (route_text's maintenance_lines)."""
        site = self.site(app)
        return site.exists() and "@vpskit_closed" in site.read_text()

    def route_to(self, template: str, app: str, upstream: str) -> bool:
        """The app's route points at `upstream` (closed still, when it was), or stays as it was (then False,
        Caddy's reason in the log). Under the proxy's lock, shared with the deploy's changes to its ports
        (vpskit/proxy.py)."""
        with self.locked(f"route of {app}") as held:
            return held and self.apply(app, route_text(template, upstream, app if self.closed(app) else ""))

    def maintenance(self, app: str, template: str, page: str | None) -> str:
        """Closes the app (`page`: its maintenance page's HTML) or opens it again (None): "" when done, else why
        not (nothing changed then). The route keeps its upstream: a release in between keeps it closed."""
        with self.locked(f"maintenance of {app}") as held:
            if not held:
                return "the proxy stayed locked by another deploy for 120s"
            site = self.site(app)
            upstream = upstream_of(site.read_text()) if site.exists() else ""
            if not upstream:
                return f"the proxy has no route of {app} here: deploy it first"
            refused = "the proxy refused the route (its reason above): nothing was changed"
            if page is None:  # the page stays (see page())
                return "" if self.apply(app, route_text(template, upstream)) else refused
            was = self.page(app).read_text() if self.closed(app) else None
            self.page(app).parent.mkdir(parents=True, exist_ok=True)
            tmp = self.page(app).with_name(f".{app}.html.new")
            tmp.write_text(page)
            tmp.chmod(0o644)
            tmp.replace(self.page(app))
            if self.apply(app, route_text(template, upstream, app)):
                return ""
            if was is None:
                self.page(app).unlink(missing_ok=True)
            else:
                self.page(app).write_text(was)
            return refused

    @contextlib.contextmanager
    def locked(self, what: str):
        self.root.mkdir(parents=True, exist_ok=True)
        lock = Lock(self.root / ".lock", self.fx)
        if lock.take(120, what, "the proxy's lock"):
            self.fx.say("the proxy stayed locked by another deploy for 120s")
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def apply(self, app: str, text: str) -> bool:
        """The app's route file replaced and the proxy reloaded; put back as it was when Caddy refuses it."""
        site = self.site(app)
        site.parent.mkdir(parents=True, exist_ok=True)
        before = site.read_text() if site.exists() else None
        tmp = site.with_name(site.name + ".new")
        tmp.write_text(text)
        tmp.replace(site)
        if self.reload():
            return True
        if before is None:
            site.unlink(missing_ok=True)
        else:
            site.write_text(before)
        self.reload()
        return False

    def answers(self, url: str) -> bool:
        """Whether `url` answers 2xx asked from the proxy's container (as the proxy reaches the app)."""
        return self.fx.run("docker", "exec", CONTAINER, "wget", "-q", "-T", "5", "-O", "/dev/null", url).ok

    def in_flight(self, upstream: str) -> int:
        r = self.fx.run("docker", "exec", CONTAINER, "wget", "-q", "-T", "5", "-O", "-",
                        "http://localhost:2019/reverse_proxy/upstreams")
        return in_flight(r.out if r.ok else "", upstream)


def set_maintenance(app_dir: Path, on: bool, fx: Effects, proxy: Proxy | None = None, during: str = "") -> int:
    """`vpskit-server proxy maintenance on|off`: the app closed with the maintenance page its deploy put in its
    folder, or open again; says what it did and how to undo it (`during`: the operation that opens it again
    itself, named instead). A second run with the same state changes nothing."""
    proxy = proxy or Proxy(fx)
    app = app_dir.name
    route = app_dir / "proxy-route.caddy"
    if not route.exists() or not route.read_text().strip():
        fx.say(f"vpskit maintenance: {app} is not behind vpskit's proxy here (proxy_network): close it in your own "
               "proxy (503 with Retry-After for every path but /api/health)")
        return 1
    page_file = app_dir / "maintenance.html"
    if on and not page_file.exists():
        fx.say(f"vpskit maintenance: no maintenance page in {app_dir}: run deploy.py with this vpskit first")
        return 1
    page = page_file.read_text() if on else None
    if proxy.closed(app) == on and (not on or proxy.page(app).read_text() == page):
        fx.say(f"vpskit maintenance: {app} is already {'closed' if on else 'open'}: nothing changed")
        return 0
    if why := proxy.maintenance(app, route.read_text(), page):
        fx.say(f"vpskit maintenance: {why}")
        return 1
    if not on:
        (app_dir / CLOSED_FOR).unlink(missing_ok=True)  # opened: no operation elsewhere opens it again
    if on:
        until = f"until the {during} ends" if during else "open it again with tasks/maintenance.py --data off=true"
        fx.say(f"vpskit maintenance: {app} is closed: its proxy answers 503 with the maintenance page "
               f"(Retry-After {RETRY_AFTER}s) to every request but /api/health; {until}")
    else:
        fx.say(f"vpskit maintenance: {app} is open again: its proxy routes every request to the app")
    return 0


def close_for(app_dir: Path, fx: Effects, proxy: Proxy, during: str) -> bool:
    """Closes the app for the time of `during` (a restore, an upgrade), where vpskit's proxy is in front and the
    deploy left the page; a site the operator closed stays as it is. True when this closed it (to open it again)."""
    route, page = app_dir / "proxy-route.caddy", app_dir / "maintenance.html"
    if not (route.exists() and route.read_text().strip() and page.exists()) or proxy.closed(app_dir.name):
        return False
    return set_maintenance(app_dir, True, fx, proxy, during=during) == 0


def close_during(app_dir: Path, fx: Effects, during: str, proxy: Proxy | None = None) -> int:
    """`vpskit-server proxy maintenance on --during WHAT`: the site closed for an operation on another server (the
    db server's PostgreSQL upgrade), remembered in the app's folder so that `open_after` opens only what this
    closed; a site the operator closed, or not behind vpskit's proxy, is left as it is (said)."""
    proxy = proxy or Proxy(fx)
    if close_for(app_dir, fx, proxy, during):
        (app_dir / CLOSED_FOR).write_text(during + "\n")
        return 0
    if proxy.closed(app_dir.name):
        fx.say(f"vpskit maintenance: {app_dir.name} is closed already (by tasks/maintenance.py): it stays closed "
               f"after the {during}")
        return 0
    fx.say(f"vpskit maintenance: {app_dir.name} cannot be closed here (not behind vpskit's proxy, or no "
           f"maintenance page: deploy first): it keeps answering during the {during}")
    return 0


def open_after(app_dir: Path, fx: Effects, during: str, proxy: Proxy | None = None, wait: int = 90) -> int:
    """`vpskit-server proxy maintenance off --during WHAT`: the site opened again when `close_during` closed it,
    once the app answers ready (its database back): until then visitors keep the page rather than errors."""
    proxy, app = proxy or Proxy(fx), app_dir.name
    if not (app_dir / CLOSED_FOR).exists():
        fx.say(f"vpskit maintenance: {app} was not closed for the {during}: left as it is")
        return 0
    live = proxy.site(app)
    upstream = upstream_of(live.read_text()) if live.exists() else ""
    start = fx.clock()
    while upstream and not proxy.answers(f"http://{upstream}/api/health/ready"):
        if fx.clock() - start >= wait:
            fx.say(f"vpskit maintenance: {app} does not answer ready {wait}s after the {during}: it stays closed; "
                   "its log: tasks/logs.py; open it anyway with tasks/maintenance.py --data off=true")
            return 1
        fx.sleep(2)
    return set_maintenance(app_dir, False, fx, proxy)
