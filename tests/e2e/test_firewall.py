"""`firewall = True` on a first deploy of a fresh server whose sshd listens on 2200, not 22: the package lists
are fetched before ufw is installed, ufw allows the port this SSH connection uses, and the next run still gets
in and changes nothing. When a firewall does drop SSH, the run stops with one vpskit line naming host and port."""

from __future__ import annotations

import pytest

from tests.e2e.test_deploy import results
from tests.support import run_pyinfra

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

SSH_PORT = 2200


@pytest.fixture(scope="module")
def env_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("operator") / ".env"
    path.write_text("POSTGRES_PASSWORD=fw-password\nPAYLOAD_SECRET=firewall-payload-secret-0123456789abcdef\n")
    return path


@pytest.fixture(scope="module")
def server(vps_factory):
    vps = vps_factory("firewall", ssh_port=SSH_PORT)
    # A fresh server: no package lists yet, so `apt-get install ufw` alone would find no candidate.
    assert vps.exec("sh", "-c", "ls /var/lib/apt/lists/*_Packages 2>/dev/null | wc -l").stdout.strip() == "0"
    return vps


def allowed(vps) -> set[str]:
    status = vps.exec("ufw", "status").stdout
    assert "Status: active" in status, status
    return {ln.split()[0] for ln in status.splitlines() if " ALLOW " in ln and "(v6)" not in ln}


def test_first_deploy_with_firewall_allows_the_ssh_port_in_use(server, env_file):
    first = run_pyinfra(server, env_file, "deploy.py", "--data", "firewall=true")
    assert first.returncode == 0, first.stdout[-4000:]
    assert allowed(server) == {f"{SSH_PORT}/tcp", "80/tcp", "443/tcp"}
    again = run_pyinfra(server, env_file, "deploy.py", "--data", "firewall=true")  # SSH still gets in
    assert again.returncode == 0, again.stdout[-4000:]
    rows = results(again.stdout)
    changed = {name: row for name, row in rows.items() if row != ("-", "-", "1")}
    assert rows and not changed, f"{changed}\n{again.stdout[-3000:]}"


def test_ssh_dropped_by_a_firewall_gets_one_clear_line(server, env_file):
    server.exec("ufw", "delete", "allow", f"{SSH_PORT}/tcp")  # as a mistaken rule by hand would
    try:
        out = run_pyinfra(server, env_file, "tasks/health.py", timeout=120)
        assert out.returncode == 2
        assert (f"vpskit: 127.0.0.1:{server.port} accepts connections but no SSH server answered within 8s: "
                "a firewall on the server may be dropping SSH") in out.stdout
        assert "No existing session" not in out.stdout
    finally:
        server.exec("ufw", "allow", f"{SSH_PORT}/tcp")
