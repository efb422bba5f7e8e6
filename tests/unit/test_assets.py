"""The static files of every kept release, served by the proxy (vpskit/server/assets.py): added by each release,
taken away with the releases that are pruned."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_render import ctx
from vpskit.render import render
from vpskit.server import assets
from vpskit.server.effects import Result


class CopyFx:
    """docker cp of a container's /app/.next/static: the files a version's image holds."""

    def __init__(self, images: dict[str, dict[str, str]], fail: bool = False):
        self.images, self.fail, self.calls = images, fail, []

    def run(self, *args: str, **kw) -> Result:
        self.calls.append(args)
        if self.fail:
            return Result(1, "", "Error: No such container: gone\n")
        container, dest = args[2].split(":", 1)[0], Path(args[3])
        for name, text in self.images[container].items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_text(text)
        return Result(0)


V1 = {"chunks/app-1a.js": "one", "chunks/shared-00.js": "shared", "b1/_buildManifest.js": "m1"}
V2 = {"chunks/app-2b.js": "two", "chunks/shared-00.js": "shared", "b2/_buildManifest.js": "m2"}
V3 = {"chunks/app-3c.js": "three", "chunks/shared-00.js": "shared", "b3/_buildManifest.js": "m3"}


def served(root: Path) -> set[str]:
    return set(assets.files_under(assets.folder("shop", root) / "_next" / "static"))


def test_each_release_adds_its_files_and_a_pruned_release_takes_away_only_its_own(tmp_path):
    fx = CopyFx({"c1": V1, "c2": V2, "c3": V3})
    for container, version in (("c1", "v1"), ("c2", "v2")):
        assert assets.publish(fx, container, "shop", version, tmp_path) == ""
    assert served(tmp_path) == set(V1) | set(V2)  # v1's page still finds its chunks once v2 serves
    assert fx.calls[0] == ("docker", "cp", "c1:/app/.next/static/.", fx.calls[0][3])
    assets.publish(fx, "c3", "shop", "v3", tmp_path)
    assert assets.prune("shop", {"v2", "v3"}, tmp_path) == 2  # v1's chunk and manifest; the shared one stays
    assert served(tmp_path) == set(V2) | set(V3)
    assert not (assets.folder("shop", tmp_path) / "_next" / "static" / "b1").exists()
    assert sorted(p.name for p in (assets.folder("shop", tmp_path) / ".versions").iterdir()) == ["v2", "v3"]
    assert assets.prune("shop", {"v2", "v3"}, tmp_path) == 0  # a second prune changes nothing


def test_a_file_already_there_is_left_as_it_is(tmp_path):
    fx = CopyFx({"c1": V1, "c1b": {**V1, "chunks/app-1a.js": "changed"}})
    assets.publish(fx, "c1", "shop", "v1", tmp_path)
    assets.publish(fx, "c1b", "shop", "v1", tmp_path)  # a rollback to v1 copies them out again
    path = assets.folder("shop", tmp_path) / "_next" / "static" / "chunks" / "app-1a.js"
    assert path.read_text() == "one" and oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_copy_that_fails_is_said_and_changes_nothing(tmp_path):
    why = assets.publish(CopyFx({}, fail=True), "gone", "shop", "v1", tmp_path)
    assert why.startswith("its static files could not be copied out (Error: No such container")
    assert not (assets.folder("shop", tmp_path) / ".versions").exists()
    assert list(tmp_path.iterdir()) == []  # no scratch folder left


def test_the_route_serves_kept_static_files_first_in_each_site_block():
    route = render("proxy-route.caddy", **ctx(domain="shop.example.com", publish_port=3000))
    assert route.count("\t\tpath /_next/static/*\n\t\tfile {\n\t\t\troot /etc/caddy/static/example\n") == 2
    assert route.count('header Cache-Control "public, max-age=31536000, immutable"\n\t\tfile_server') == 2
    # The app answers what the folder does not have: the static handle comes before the app's reverse_proxy.
    assert route.index("@vpskit_static_kept") < route.index("reverse_proxy @UPSTREAM@")


def test_a_folder_that_cannot_be_written_is_said_and_a_prune_there_fails_nothing(tmp_path):
    missing = tmp_path / "no-proxy-here"
    why = assets.publish(CopyFx({"c1": V1}), "c1", "shop", "v1", missing)
    assert why.startswith("they could not be written (")
    assert assets.prune("shop", {"v1"}, missing) == 0
