"""Fixtures: the test bed (engine + stand-in images), fresh VPS hosts, and clean-up of all of it."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import build_once, remove_session_leftovers
from tests.testbed import vps as testbed_vps

REQUIRED_IMAGES = ["caddy:2", "node:22-bookworm-slim", "postgres:15", "postgres:17", "registry:2", "vpskit-testbed/s3",
                   testbed_vps.IMAGE, testbed_vps.IMAGE_DOCKER]
SESSION = f"pytest-{os.getpid()}"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def testbed():
    """The Docker Engine with Compose v2 and the stand-in images, as tests/testbed/setup.sh leaves them."""
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        pytest.fail("no Docker Engine answers: run `make testbed` (tests/testbed/setup.sh) first")
    missing = [i for i in REQUIRED_IMAGES
               if subprocess.run(["docker", "image", "inspect", i], capture_output=True, timeout=60).returncode != 0]
    if missing:
        pytest.fail(f"stand-in images missing ({', '.join(missing)}): run `make testbed` first")
    yield SESSION
    remove_session_leftovers(SESSION)


@pytest.fixture(scope="session")
def example_image(testbed):
    """The example app's image as deploy.py builds it, built once per run whatever the number of test
    workers (the modules that deploy the example use it; their deploys then ship it without a build)."""
    return build_once(ROOT / "example", "example")


_VPS_COUNT = itertools.count()


@pytest.fixture(scope="module")
def vps_factory(testbed):
    """Starts fresh VPS hosts on demand; removes them (containers, volumes, keys) when the test module ends: an
    idle VPS still runs systemd, Docker, its healthchecks and timers, and the suite is CPU-bound on two cores."""
    started: list[str] = []

    def make(tag: str = "vps", ssh_port: int = 22, network: str | None = None, memory: str | None = None,
             cpus: str = "1", docker_ready: bool = False) -> testbed_vps.VPS:
        """`network`: a test network (testbed_vps.network(NAME, testbed)) to put it on, reachable there by name;
        `memory` (e.g. "1g"): sized like a server, everything it runs within that memory and `cpus` CPUs;
        `docker_ready`: Docker Engine already installed, for modules whose claims are not the install."""
        name = f"vpskit-{tag}-{os.getpid()}-{next(_VPS_COUNT)}"
        started.append(name)
        return testbed_vps.start(name, session=testbed, ssh_port=ssh_port, network=network, memory=memory,
                                 cpus=cpus, docker_ready=docker_ready)

    yield make
    for name in started:
        testbed_vps.remove(name)


@pytest.fixture
def vps(vps_factory):
    """A fresh VPS for one test."""
    return vps_factory()


@pytest.fixture
def vps_host(vps):
    """The pytest-testinfra host of `vps`, over SSH as the deploy user."""
    return vps.testinfra_host()


# The slowest modules first, so that with parallel workers (make test) none is left with a long module at
# the end: each holds its own VPS for many minutes, mostly waiting on builds, SSH and health checks.
SLOW_FIRST = ["test_day2.py", "test_website_template.py", "test_transactions.py", "test_multihost.py", "test_ship.py",
              "test_offsite.py", "test_payload_template.py", "test_deploy.py", "test_zero_downtime.py",
              "test_small_server.py", "test_disaster_recovery.py", "test_proxy.py", "test_managed_db.py",
              "test_firewall.py", "test_readme_demo.py", "test_bad_input.py", "test_example_app.py"]


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within a module stays


# Wall time per test module (first test's start to last test's end, module fixtures included), printed at the
# end of the run: where `make test`'s minutes go.
_MODULE_TIMES: dict[str, list[float]] = {}


def pytest_runtest_logstart(nodeid, location):
    import time

    _MODULE_TIMES.setdefault(nodeid.split("::")[0], [time.monotonic(), time.monotonic()])


def pytest_runtest_logfinish(nodeid, location):
    import time

    _MODULE_TIMES.setdefault(nodeid.split("::")[0], [time.monotonic(), 0.0])[1] = time.monotonic()


def _machine_cpu() -> tuple[float, float]:
    """CPU seconds used so far by the whole machine and by all its containers (cgroup v1 cpuacct; 0 without)."""
    def read(path: str) -> float:
        try:
            return int(Path(path).read_text()) / 1e9
        except (OSError, ValueError):
            return 0.0
    return read("/sys/fs/cgroup/cpuacct/cpuacct.usage"), read("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller: where the run's CPU went is read from here
        testbed_vps.CPU_LOG.unlink(missing_ok=True)
        config._vpskit_cpu = _machine_cpu()


def pytest_terminal_summary(terminalreporter, config):
    start = getattr(config, "_vpskit_cpu", None)
    if start and start[0] and testbed_vps.CPU_LOG.exists():
        end = _machine_cpu()
        by_tag: dict[str, float] = {}
        for line in testbed_vps.CPU_LOG.read_text().splitlines():
            name, seconds = line.split("\t")
            tag = name.removeprefix("vpskit-").rsplit("-", 2)[0]
            by_tag[tag] = by_tag.get(tag, 0.0) + float(seconds)
        machine, containers, vpses = end[0] - start[0], end[1] - start[1], sum(by_tag.values())
        others = max(0.0, containers - vpses)
        terminalreporter.write_line(
            # A VPS's own processes (systemd, its dockerd pulling images, sshd, apt) are in its cgroup; the app, db
            # and proxy containers its Docker runs land beside it (no cgroup_parent but on the 1 GB VPS): "other".
            f"CPU: {machine:.0f} s in all; VPS hosts' own processes {vpses:.0f} s, other containers (image builds, "
            f"the VPSes' app/db/proxy containers, registry, test servers) {others:.0f} s, processes of "
            f"this machine (pytest, pyinfra, ssh, dockerd) {machine - containers:.0f} s; VPS hosts by tag: "
            + ", ".join(f"{tag} {sec:.0f}" for tag, sec in sorted(by_tag.items(), key=lambda kv: -kv[1])))
    _module_times(terminalreporter)


def _module_times(terminalreporter):
    slow = sorted(((end - start, module) for module, (start, end) in _MODULE_TIMES.items()), reverse=True)
    if slow and slow[0][0] >= 30:
        terminalreporter.write_line("module wall times: " + ", ".join(
            f"{module.removeprefix('tests/').removesuffix('.py')} {took:.0f}s" for took, module in slow if took >= 5))

