"""A fresh test VPS looks like a new cheap server: SSH as deploy, systemd up, sudo, no Docker yet."""

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def vps(vps_factory):
    """One fresh VPS for these read-only checks (booting one per test would only repeat the same boot)."""
    return vps_factory("fresh")


@pytest.fixture(scope="module")
def vps_host(vps):
    return vps.testinfra_host()


def test_ssh_as_deploy_with_verified_host_key(vps):
    out = vps.ssh("id -un; hostname")
    assert out.stdout.split() == ["deploy", vps.name]


def test_systemd_is_up(vps_host):
    state = vps_host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded")
    assert vps_host.service("ssh").is_running


def test_sudo_works_without_password(vps_host):
    assert vps_host.run("sudo -n id -u").stdout.strip() == "0"


def test_docker_is_not_installed(vps_host):
    assert not vps_host.exists("docker")
    assert not vps_host.package("docker.io").is_installed
    assert not vps_host.file("/var/run/docker.sock").exists


def test_ssh_is_published_on_loopback_only(vps):
    from tests.testbed.vps import docker

    bindings = docker("port", vps.name, "22/tcp").stdout.split()
    assert bindings and all(b.startswith("127.0.0.1:") for b in bindings)


def test_unknown_host_key_is_refused(vps, tmp_path):
    """The generated known_hosts is what makes SSH trust the VPS: with another host's key it refuses."""
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{vps.port} ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIDk9PaD55q3xc6X1soEQeYCBy6+NSy2b3L1XapQuXi2n\n")
    vps.known_hosts, saved = wrong, vps.known_hosts
    try:
        out = vps.ssh("true", check=False)
    finally:
        vps.known_hosts = saved
    assert out.returncode == 255
    assert "host key" in out.stderr.lower()
