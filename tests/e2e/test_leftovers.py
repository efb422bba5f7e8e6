"""tests/testbed/leftovers.sh, which `make test` runs after the suite, finds each kind of thing a test can
leave behind (a labelled container, volume and image, a process bound to a test VPS) and stops finding it
once it is removed."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import wait_until
from tests.testbed.vps import LABEL, docker

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def leftovers() -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "tests" / "testbed" / "leftovers.sh")], capture_output=True,
                          text=True, timeout=120)


def test_leftovers_finds_what_a_test_left_and_forgets_it_once_removed(testbed):
    session = f"pytest-leftover-check-{os.getpid()}"
    name = f"vpskit-leftover-check-{os.getpid()}"
    label = f"{LABEL}.session={session}"
    docker("volume", "create", "--label", label, name)
    docker("create", "--name", name, "--label", label, "postgres:17")
    build = subprocess.run(["docker", "build", "--label", label, "-t", f"{name}:1", "-"], text=True,
                           input="FROM postgres:17\n", capture_output=True, timeout=300,
                           env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert build.returncode == 0, build.stderr
    key = f"/nonexistent/.testbed/vps/vpskit-check-{os.getpid()}-0/id_ed25519"
    proc = subprocess.Popen(["bash", "-c", f'exec -a "ssh -i {key} -N" sleep 120'])
    try:
        ps = ["ps", "-eo", "args"]
        wait_until(lambda: key in subprocess.run(ps, capture_output=True, text=True, timeout=30).stdout, 10,
                   "the stand-in tunnel process")
        out = leftovers()
        assert out.returncode == 1
        for line in (f"leftover container: /{name}", f"leftover volume: {name}", f"leftover process: {proc.pid} "):
            assert line in out.stdout, out.stdout
        assert f"{name}:1" in out.stdout
    finally:
        proc.kill()
        proc.wait(timeout=10)
        docker("rm", "-f", name, check=False)
        docker("volume", "rm", "-f", name, check=False)
        docker("rmi", "-f", f"{name}:1", check=False)
    out = leftovers()
    assert name not in out.stdout and str(proc.pid) not in out.stdout
