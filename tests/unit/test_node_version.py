"""The Node version an app asks for (engines.node, .nvmrc, .node-version) and the image vpskit builds it on."""

from __future__ import annotations

import json

import pytest

from vpskit import app_check, node_version
from vpskit.node_version import NodeWant, choose, image_version, satisfies
from vpskit.settings import SettingsError


@pytest.mark.parametrize(("text", "major", "ok"), [
    (">=24.15.0", 24, True), (">=24.15.0", 22, False), (">=24.15.0", 26, True),
    ("^18.20.2 || >=20.9.0", 22, True), ("^18.20.2 || >=20.9.0", 19, False), ("^18.20.2 || >=20.9.0", 18, True),
    ("^22.11", 22, True), ("^22.11", 24, False), ("~20.9", 20, True), ("~20.9", 21, False),
    ("22.x", 22, True), ("22.x", 24, False), ("22", 22, True), ("v24", 24, True), ("=20.9.0", 20, True),
    (">=20 <23", 22, True), (">=20 <23", 24, False), (">= 20, < 21", 20, True), (">20", 20, False),
    (">20.1", 20, True), ("<=22", 22, True), ("<=22", 23, False), ("<22", 22, False), ("<22.1", 22, True),
    ("20 - 22", 22, True), ("20 - 22", 24, False), ("20.5 - 22.1", 22, True), ("*", 30, True), ("x", 18, True),
    (">=22.0.0-rc.1", 22, True), (">=24.0.0 || 22.x", 22, True),
])
def test_a_range_accepts_a_major_when_some_release_of_it_satisfies(text, major, ok):
    assert satisfies(text, major) is ok


def test_an_exact_version_is_checked_as_it_is():
    assert satisfies(">=24.15.0", 24, (24, 16, 0))
    assert not satisfies(">=24.15.0", 24, (24, 14, 9))


@pytest.mark.parametrize("text", ["latest", ">=abc", "22 || lts"])
def test_an_unreadable_range_is_named(text):
    with pytest.raises(SettingsError, match=f'engines.node "{text}" is not a version range npm reads'):
        node_version.ranges(text)


@pytest.mark.parametrize(("ref", "found"), [
    ("node:24-bookworm-slim", (24, None)), ("node:24.15.0-slim", (24, (24, 15, 0))), ("node:22", (22, None)),
    ("registry.example.com:5000/node:20-alpine", (20, None)), ("node:lts-slim", None), ("node", None),
    ("node@sha256:" + "a" * 64, None), ("vpskit-test-node-x:22", (22, None)), ("node:bookworm", None),
])
def test_the_node_major_an_image_tag_names(ref, found):
    assert image_version(ref) == found


def test_the_default_image_for_an_app_that_names_no_version_is_22():
    choice = choose("", NodeWant())
    assert choice.image == "node:22-bookworm-slim" and "the default" in choice.why


@pytest.mark.parametrize(("want", "image"), [
    (NodeWant(">=20.9.0"), "node:22-bookworm-slim"),  # 22 accepted: as before, the same image and version
    (NodeWant(">=24.15.0"), "node:24-bookworm-slim"),  # Payload's newest templates
    (NodeWant("^20.9"), "node:20-bookworm-slim"),
    (NodeWant("", 24, ".nvmrc"), "node:24-bookworm-slim"),
    (NodeWant(">=20", 20, ".node-version"), "node:20-bookworm-slim"),
    (NodeWant("25.x"), "node:25-bookworm-slim"),  # an odd major only when nothing else fits
])
def test_the_image_picked_is_the_first_acceptable_major(want, image):
    choice = choose("", want)
    assert choice.image == image
    assert want.describe() in choice.why


def test_a_node_image_that_cannot_give_the_node_asked_for_is_refused_naming_the_fix():
    with pytest.raises(SettingsError) as err:
        choose("node:22-bookworm-slim", NodeWant(">=24.15.0"))
    assert str(err.value) == ('node_image=node:22-bookworm-slim gives Node 22, but the app asks for package.json '
                              'engines.node ">=24.15.0": set node_image = "node:24-bookworm-slim", or leave it '
                              "empty to have it picked (TROUBLESHOOTING 53)")
    with pytest.raises(SettingsError, match="node_image=node:24.10.0-slim gives Node 24"):
        choose("node:24.10.0-slim", NodeWant(">=24.15.0"))  # an exact tag is held to the exact version


def test_a_node_image_that_gives_it_or_names_no_version_is_used_as_set():
    assert choose("node:24-bookworm-slim", NodeWant(">=24.15.0")).image == "node:24-bookworm-slim"
    assert choose("node:22-bookworm-slim", NodeWant()).why == "Node 22 from node_image=node:22-bookworm-slim"
    unknown = choose("node:lts-slim", NodeWant(">=24"))
    assert unknown.image == "node:lts-slim" and "not checked" in unknown.why


def test_requirements_that_no_major_meets_are_refused():
    with pytest.raises(SettingsError, match=r'asks for package.json engines.node ">=24" and .nvmrc 22, which no '
                                            "Node release"):
        choose("", NodeWant(">=24", 22, ".nvmrc"))


@pytest.mark.parametrize(("content", "major"), [
    ("22\n", 22), ("v24.15.0\n", 24), ("24.15", 24), ("lts/jod", 22), ("lts/krypton", 24), ("lts/*", None),
    ("node", None), ("# a comment\n", None),
])
def test_nvmrc_names_a_major(tmp_path, content, major):
    (tmp_path / "package.json").write_text("{}")
    (tmp_path / ".nvmrc").write_text(content)
    want = node_version.read(tmp_path)
    assert want.pin == major and want.engines == ""


def test_read_takes_engines_and_the_pin_file(tmp_path):
    (tmp_path / "package.json").write_text(json.dumps({"engines": {"node": ">=24.15.0", "pnpm": "^10"}}))
    assert node_version.read(tmp_path) == NodeWant(">=24.15.0")
    (tmp_path / ".node-version").write_text("24.15.0\n")
    assert node_version.read(tmp_path) == NodeWant(">=24.15.0", 24, ".node-version")
    (tmp_path / "package.json").write_text(json.dumps({"engines": {"node": "newest"}}))
    with pytest.raises(SettingsError, match='"newest" is not a version range'):
        node_version.read(tmp_path)


def test_the_example_app_builds_on_22_as_before():
    s = {"node_image": "", "app": app_check.check(app_check.Path(__file__).resolve().parents[2] / "example")}
    node_version.settle(s)
    assert s["node_image"] == "node:22-bookworm-slim"
    assert s["node_why"] == 'Node 22 (package.json engines.node ">=20.9.0")'


def test_preflight_refuses_a_node_image_the_app_does_not_accept_and_takes_package_manager(tmp_path):
    import shutil

    from vpskit import preflight, settings

    app = tmp_path / "app"
    shutil.copytree(app_check.Path(__file__).resolve().parents[2] / "example", app,
                    ignore=shutil.ignore_patterns("node_modules", ".next", "media"))
    (app / ".nvmrc").write_text("v24.15.0\n")
    s = settings.load({"app_path": str(app)})
    assert preflight.app(s).node == NodeWant(">=20.9.0", 24, ".nvmrc")
    with pytest.raises(SettingsError, match="node_image=node:22-bookworm-slim gives Node 22"):
        preflight.app(settings.load({"app_path": str(app), "node_image": "node:22-bookworm-slim"}))
    # A second lock file with package_manager set says which builds it: accepted before connecting too.
    (app / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    assert preflight.app(settings.load({"app_path": str(app), "package_manager": "npm"})).package_manager.name == "npm"
