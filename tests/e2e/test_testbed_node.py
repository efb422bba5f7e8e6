"""The node:22-bookworm-slim stand-in (and node:24-bookworm-slim, for apps that ask for Node 24): Node with npm,
user node (uid 1000), and `npm ci` works inside a build (it trusts the machine's CA bundle, which the registry
proxy needs)."""

import os
from pathlib import Path

import pytest

from tests.support import run
from tests.testbed.vps import LABEL, docker

pytestmark = pytest.mark.e2e
PROBE = Path(__file__).parent / "fixtures" / "npm-probe"


def test_npm_ci_inside_a_build_as_user_node(testbed):
    tag = f"vpskit-npm-probe:{testbed}"
    build = run(["docker", "build", "--no-cache", "--label", f"{LABEL}.session={testbed}", "-t", tag, str(PROBE)],
                env={**os.environ, "DOCKER_BUILDKIT": "0"})
    try:
        assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
        out = docker("run", "--rm", tag).stdout.split()
        assert out[0].startswith("v22.")
        assert out[1:] == ["1000", "true"]
    finally:
        docker("rmi", "-f", tag, check=False)


@pytest.mark.parametrize("major", [22, 24])
def test_node_user_and_npm_on_path(testbed, major):
    out = docker("run", "--rm", "-u", "node", f"node:{major}-bookworm-slim", "sh", "-c",
                 "id -u; id -gn; npm --version; node --version").stdout.split()
    assert out[0] == "1000" and out[1] == "node"
    assert out[2].split(".")[0] == "10"
    assert out[3].startswith(f"v{major}.")
