"""Which Engine a server runs decides whether the compose file asks Docker to check health every second while a
container starts (`start_interval`, Engine 25+): Compose refuses the key on an older Engine, so a wrong "yes"
stops the deploy, and a wrong "no" only costs seconds per release."""

import pytest
import yaml

from vpskit import engine
from vpskit.facts import DockerEngine
from vpskit.render import render

from .test_render import ctx


@pytest.mark.parametrize("version, want", [
    ("5:27.3.1-1~debian.13~trixie", 27),  # Docker's own docker-ce, with its epoch
    ("26.1.5+dfsg1-9+b9", 26),            # Debian 13's docker.io
    ("20.10.24+dfsg1-1+deb12u1", 20),     # Debian 12's docker.io
    ("24.0.7-0ubuntu4.1", 24),            # Ubuntu 24.04's docker.io at release
    ("(none)", None),
    ("", None),
])
def test_major_reads_debian_package_versions(version, want):
    assert engine.major(version) == want


def test_the_fact_reads_what_is_installed_and_what_apt_would_install():
    fact = DockerEngine()
    assert fact.process(["installed 26.1.5+dfsg1-9+b9", "candidate 26.1.5+dfsg1-9+b9"]) == {
        "installed": "26.1.5+dfsg1-9+b9", "candidate": "26.1.5+dfsg1-9+b9"}
    # docker-ce is asked first: when both are somehow installed, Docker's own package is the one that runs.
    assert fact.process(["installed 5:27.3.1-1~debian.13~trixie", "installed 26.1.5+dfsg1-9+b9"]) == {
        "installed": "5:27.3.1-1~debian.13~trixie"}
    assert fact.process(["candidate (none)", "os debian 13"]) == {"candidate": "(none)", "os": "debian 13"}
    assert fact.process([]) == {}
    assert "dpkg-query" in fact.command() and "apt-cache policy docker.io" in fact.command()


@pytest.mark.parametrize("source, found, want", [
    ("distro", {"installed": "26.1.5+dfsg1-9+b9"}, True),
    ("distro", {"installed": "20.10.24+dfsg1-1+deb12u1", "candidate": "26.1.5"}, False),  # what runs decides
    ("docker", {"installed": "24.0.7-0ubuntu4.1"}, False),  # an old Engine stays until it is upgraded
    ("distro", {"candidate": "26.1.5+dfsg1-9+b9"}, True),    # a fresh Debian 13: the deploy installs 26
    ("distro", {"candidate": "20.10.24+dfsg1-1+deb12u1"}, False),  # a fresh Debian 12
    ("docker", {}, True),   # Docker's apt repository has nothing older than 25 for these distributions
    ("distro", {}, False),  # nothing known: unknown is no
    ("distro", {"candidate": "(none)", "os": "debian 13"}, True),  # no apt lists yet: Debian 13 ships 26.1
    ("distro", {"candidate": "(none)", "os": "ubuntu 24.04"}, False),  # its release pocket has 24.0
    ("distro", {"candidate": "(none)", "os": "debian 12"}, False),
    ("distro", {"candidate": "(none)"}, False),
])
def test_start_interval_only_for_an_engine_known_to_take_it(source, found, want):
    assert engine.health_start_interval(source, found) is want


def test_the_compose_file_asks_for_it_only_when_told():
    for on in (True, False):
        c = yaml.safe_load(render("docker-compose.yml", **{**ctx(), "health_start_interval": on}))
        for service in ("app", "db"):
            check = c["services"][service]["healthcheck"]
            assert ("start_interval" in check) is on
            if on:
                assert check["start_interval"] == "1s"
    # Left unset (a caller that did not plan), the key is not written: the safe side.
    assert "start_interval" not in render("docker-compose.yml", **{k: v for k, v in ctx().items()
                                                                   if k != "health_start_interval"})
