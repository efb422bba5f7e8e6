"""Maintenance mode in the server's proxy (vpskit/server/proxy.py): what the route of a closed app says, closing
and opening it (the page as the flag, one reload, a second run that changes nothing), a release in between
keeping it closed, and a route Caddy refuses leaving everything as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.server_fakes import FakeEffects, World
from vpskit import settings
from vpskit.render import render
from vpskit.server.proxy import Proxy, close_during, open_after, route_text, set_maintenance, upstream_of

PAGE = "<h1>Back soon</h1>\n"


def template(**over) -> str:
    s = {**settings.load({}), "app_name": "shop", "domain": "shop.test", "publish_port": 3000, **over}
    return render("proxy-route.caddy", **s)


@pytest.fixture
def box(tmp_path: Path):
    """An app folder as a deploy leaves it, a proxy folder with the app's live route, and the recorded world."""
    app = tmp_path / "opt" / "shop"
    app.mkdir(parents=True)
    (app / "proxy-route.caddy").write_text(template())
    (app / "maintenance.html").write_text(PAGE)
    root = tmp_path / "proxy"
    w = World()
    fx = FakeEffects(w)
    proxy = Proxy(fx, root)
    assert proxy.route_to(template(), "shop", "shop-app-1:3000")
    w.calls.clear()
    return app, proxy, fx, w


def reloads(w: World) -> int:
    return sum(1 for c in w.calls if "reload" in c)


def test_a_closed_route_answers_503_with_the_page_in_each_site_block_but_health():
    text = route_text(template(), "shop-app-1:3000", "shop")
    blocks = text.count("\terror @vpskit_closed 503\n")
    assert blocks == 2  # the domain's block and the published port's
    assert text.count("@vpskit_closed not path /api/health /api/health/*") == 2
    assert "rewrite * /shop.html" in text and "header Retry-After 30" in text
    assert "expression {http.error.status_code} == 503" in text  # a 502 keeps Caddy's own answer
    assert "reverse_proxy shop-app-1:3000 shop-app:3000" in text
    assert route_text(template(), "shop-app-1:3000") == template().replace("@UPSTREAM@", "shop-app-1:3000")
    assert upstream_of(text) == "shop-app-1:3000"


def test_closing_writes_the_page_and_the_route_once_and_a_second_run_changes_nothing(box):
    app, proxy, fx, w = box
    assert set_maintenance(app, True, fx, proxy) == 0
    assert proxy.page("shop").read_text() == PAGE
    assert "error @vpskit_closed 503" in proxy.site("shop").read_text()
    assert reloads(w) == 1
    assert w.said[-1].startswith("vpskit maintenance: shop is closed: its proxy answers 503")
    assert "tasks/maintenance.py --data off=true" in w.said[-1]
    assert set_maintenance(app, True, fx, proxy) == 0
    assert w.said[-1] == "vpskit maintenance: shop is already closed: nothing changed" and reloads(w) == 1


def test_a_new_page_while_closed_replaces_the_old_one(box):
    app, proxy, fx, w = box
    set_maintenance(app, True, fx, proxy)
    (app / "maintenance.html").write_text("<h1>Upgrading the database</h1>\n")
    assert set_maintenance(app, True, fx, proxy) == 0
    assert proxy.page("shop").read_text() == "<h1>Upgrading the database</h1>\n" and reloads(w) == 2


def test_a_release_while_closed_keeps_the_site_closed_on_the_new_container(box):
    app, proxy, fx, w = box
    set_maintenance(app, True, fx, proxy)
    assert proxy.route_to(template(), "shop", "shop-app-2:3000")
    live = proxy.site("shop").read_text()
    assert "reverse_proxy shop-app-2:3000" in live and "error @vpskit_closed 503" in live


def test_opening_routes_everything_to_the_app_and_leaves_the_page_for_requests_still_in_flight(box):
    app, proxy, fx, w = box
    set_maintenance(app, True, fx, proxy)
    assert set_maintenance(app, False, fx, proxy) == 0
    # A request the closed route took just before the reload still reads the page: gone, it got an empty 503
    # (seen once in a full run, after the page was removed right after the reload).
    assert proxy.page("shop").exists() and not proxy.closed("shop")
    assert proxy.site("shop").read_text() == route_text(template(), "shop-app-1:3000")
    assert w.said[-1] == "vpskit maintenance: shop is open again: its proxy routes every request to the app"
    assert set_maintenance(app, False, fx, proxy) == 0
    assert w.said[-1] == "vpskit maintenance: shop is already open: nothing changed"


def test_a_route_caddy_refuses_leaves_the_site_open_as_it_was(box):
    app, proxy, fx, w = box
    before = proxy.site("shop").read_text()
    w.reload_ok = False
    assert set_maintenance(app, True, fx, proxy) == 1
    assert w.said[-1] == ("vpskit maintenance: the proxy refused the route (its reason above): nothing was "
                          "changed")
    assert proxy.site("shop").read_text() == before and not proxy.page("shop").exists()


def test_an_app_without_a_route_or_behind_another_proxy_is_refused(box, tmp_path):
    app, proxy, fx, w = box
    other = tmp_path / "opt" / "blog"
    other.mkdir()
    (other / "proxy-route.caddy").write_text(template(app_name="blog"))
    (other / "maintenance.html").write_text(PAGE)
    assert set_maintenance(other, True, fx, proxy) == 1
    assert w.said[-1] == "vpskit maintenance: the proxy has no route of blog here: deploy it first"
    (other / "proxy-route.caddy").write_text("")
    assert set_maintenance(other, True, fx, proxy) == 1
    assert "is not behind vpskit's proxy here (proxy_network)" in w.said[-1]
    assert not proxy.page("blog").exists()


def test_vpskits_page_is_small_and_self_contained():
    page = render("maintenance.html", **{**settings.load({}), "app_name": "shop", "domain": "shop.test"})
    assert page.startswith("<!doctype html>") and "shop.test is closed for a short maintenance" in page
    assert "http://" not in page and "https://" not in page and "src=" not in page  # nothing fetched elsewhere
    assert len(page) < 2000


def test_opening_keeps_the_page_until_the_route_no_longer_serves_it(box):
    """Removed before the reload, the page would be missing for the requests the closed route still answers
    (an empty 503, seen on the test bed); and a reload Caddy refuses leaves the site closed, page and all."""
    app, proxy, fx, w = box
    set_maintenance(app, True, fx, proxy)
    seen = []
    reload = proxy.reload

    def reload_seeing_the_page() -> bool:
        seen.append(proxy.page("shop").exists())
        return reload()

    proxy.reload = reload_seeing_the_page
    w.reload_ok = False
    assert set_maintenance(app, False, fx, proxy) == 1
    assert proxy.closed("shop") and "error @vpskit_closed 503" in proxy.site("shop").read_text()
    w.reload_ok = True
    assert set_maintenance(app, False, fx, proxy) == 0
    assert seen[-1] is True and not proxy.closed("shop")


def serving(w: World, ready: bool = True):
    w.project = "shop"
    return w.add("app", ready=ready)  # shop-app-1, the route's upstream


def test_closed_for_an_operation_elsewhere_it_opens_again_after_it_and_only_then(box):
    app, proxy, fx, w = box
    serving(w)
    during = "PostgreSQL upgrade on the db server"
    assert open_after(app, fx, during, proxy) == 0  # not closed for it: nothing opened, nothing reloaded
    assert w.said[-1] == f"vpskit maintenance: shop was not closed for the {during}: left as it is"
    assert close_during(app, fx, during, proxy) == 0
    assert proxy.closed("shop") and (app / ".closed-for").read_text() == during + "\n"
    assert w.said[-1].endswith(f"until the {during} ends")
    assert open_after(app, fx, during, proxy) == 0
    assert not proxy.closed("shop") and not (app / ".closed-for").exists() and reloads(w) == 2


def test_it_stays_closed_while_the_app_does_not_answer_ready(box):
    app, proxy, fx, w = box
    c = serving(w, ready=False)
    close_during(app, fx, "upgrade", proxy)
    assert open_after(app, fx, "upgrade", proxy, wait=10) == 1
    assert proxy.closed("shop") and w.time >= 10
    assert w.said[-1].startswith("vpskit maintenance: shop does not answer ready 10s after the upgrade: it stays "
                                 "closed")
    c.ready = True
    assert open_after(app, fx, "upgrade", proxy) == 0 and not proxy.closed("shop")


def test_a_site_the_operator_closed_stays_closed_after_an_operation_elsewhere(box):
    app, proxy, fx, w = box
    set_maintenance(app, True, fx, proxy)
    assert close_during(app, fx, "upgrade", proxy) == 0
    assert w.said[-1] == ("vpskit maintenance: shop is closed already (by tasks/maintenance.py): it stays closed "
                          "after the upgrade")
    assert open_after(app, fx, "upgrade", proxy) == 0
    assert proxy.closed("shop") and reloads(w) == 1


def test_opening_by_hand_forgets_an_operations_closing(box):
    app, proxy, fx, w = box
    close_during(app, fx, "upgrade", proxy)
    assert set_maintenance(app, False, fx, proxy) == 0
    assert not (app / ".closed-for").exists()
    set_maintenance(app, True, fx, proxy)  # closed by the operator later: the upgrade's end does not open it
    assert open_after(app, fx, "upgrade", proxy) == 0 and proxy.closed("shop")
