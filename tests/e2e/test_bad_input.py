"""Bad input: each case gets one line naming the problem and the fix, a non-zero exit, and a server that
is exactly as it was (checked from outside the SSH path)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import run_pyinfra

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GOOD_ENV = "POSTGRES_PASSWORD=pw\nPAYLOAD_SECRET=bad-input-secret-0123456789abcdef\n"
WRONG_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk9PaD55q3xc6X1soEQeYCBy6+NSy2b3L1XapQuXi2n"


@pytest.fixture(scope="module")
def vps(vps_factory):
    return vps_factory("badinput")


def server_state(vps) -> str:
    """What a run could have changed: the app and backup folders, Docker's packages, systemd units."""
    return vps.exec("sh", "-c", "ls -laR /opt /var/backups 2>&1; dpkg -l | grep -i docker; "
                    "ls /etc/systemd/system; ls -la /tmp").stdout


def run(vps, tmp_path, deploy_file="deploy.py", env_text=GOOD_ENV, env=None, args=()):
    env_file = tmp_path / ".env"
    env_file.write_text(env_text)
    return run_pyinfra(vps, env_file, deploy_file, *args, env=env, timeout=300)


def broken_app(tmp_path, breakage) -> str:
    app = tmp_path / "app"
    shutil.copytree(ROOT / "example", app, ignore=shutil.ignore_patterns("node_modules", ".next", "media"))
    breakage(app)
    return str(app)


SETTINGS = [
    ("app_memory_limit=1GB", "app_memory_limit='1GB' is not valid: use a Docker memory size such as 512m or 1g"),
    ("app_cpu_limit=two", "app_cpu_limit='two' is not a number of CPUs: use e.g. 0.5 or 1.0"),
    ("publish_port=70000", "publish_port=70000 is out of range: set it between 0 and 65535"),
    ("publish_port=http", "publish_port='http' is not a whole number: set it between 0 and 65535"),
    ("domain=https://cms.example.com", "domain='https://cms.example.com' is not valid: use a domain name"),
    ("app_name=My App", "app_name='My App' is not valid: use lowercase letters"),
    ("build_on=cloud", "build_on='cloud' is not valid: use one of local, server"),
    ("traefik_labels=true", "traefik_labels=true needs proxy_network and domain"),
    ("publish_port=0", "publish_port=0 leaves the app unreachable: set publish_port, domain or proxy_network"),
    ("app_root=opt/apps", "app_root='opt/apps' is not valid: use an absolute path such as /opt"),
    ("postgres_user=robert'); drop table", "postgres_user=\"robert'); drop table\" is not valid"),
    ("backup_schedule=daily; rm -rf /", "backup_schedule='daily; rm -rf /' is not valid: use a systemd OnCalendar"),
    ("health_timeout=1", "health_timeout=1 is out of range: set it between 10 and 3600"),
    ("db_stop_grace_period=forever", "db_stop_grace_period='forever' is not valid: use a duration such as 60s"),
    ("app_path=/nonexistent/app", "app_path=/nonexistent/app: no such directory"),
    ("publish_host=0.0.0.0 --data publish_port=443", "publish_port=443 clashes with SSH or the reverse proxy"),
    ("log_max_file=0", "log_max_file=0 is out of range: set it between 1 and 100"),
]

ENV_FILES = [
    ("POSTGRES_PASSWORD=pw\n", "PAYLOAD_SECRET is missing from"),
    ("POSTGRES_PASSWORD=pw\nPAYLOAD_SECRET=short\n", "PAYLOAD_SECRET in "),
    ("PAYLOAD_SECRET=bad-input-secret-0123456789abcdef\n", "POSTGRES_PASSWORD is missing from"),
    ('POSTGRES_PASSWORD="two\\nlines"\nPAYLOAD_SECRET=bad-input-secret-0123456789abcdef\n',
     "POSTGRES_PASSWORD in "),
    ("POSTGRES_PASSWORD=\nPAYLOAD_SECRET=bad-input-secret-0123456789abcdef\n", "POSTGRES_PASSWORD is missing"),
]

ENVIRONMENT = [
    ({"VPSKIT_GROUP": "prod"}, "VPSKIT_GROUP='prod' is not valid: use production or staging"),
    ({"VPSKIT_SSH_PORT": "ssh"}, "VPSKIT_SSH_PORT='ssh' is not a port number: use e.g. 22"),
    ({"VPSKIT_SSH_KEY": "/nonexistent/id_ed25519"}, "VPSKIT_SSH_KEY=/nonexistent/id_ed25519: no such key file"),
    ({"VPSKIT_ENV_FILE": "/nonexistent/.env"}, "/nonexistent/.env: no such file; copy .env.production.example"),
    ({"VPSKIT_APP_MEMORY_LIMIT": "lots"}, "app_memory_limit='lots' is not valid"),
]


@pytest.mark.parametrize(("data", "message"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_bad_setting(vps, tmp_path, data, message):
    before = server_state(vps)
    out = run(vps, tmp_path, args=tuple(a for part in data.split(" --data ") for a in ("--data", part)))
    assert out.returncode == 2, out.stdout[-2000:]
    assert f"vpskit: {message}" in out.stdout
    assert "Connecting to hosts" not in out.stdout  # refused before any connection
    assert server_state(vps) == before


@pytest.mark.parametrize(("text", "message"), ENV_FILES, ids=["no-secret", "short-secret", "no-password",
                                                              "newline", "empty-password"])
def test_bad_operator_env(vps, tmp_path, text, message):
    before = server_state(vps)
    out = run(vps, tmp_path, env_text=text)
    assert out.returncode == 2
    assert message in out.stdout and "vpskit: " in out.stdout
    assert server_state(vps) == before


@pytest.mark.parametrize(("env", "message"), ENVIRONMENT, ids=[next(iter(e[0])) for e in ENVIRONMENT])
def test_bad_environment(vps, tmp_path, env, message):
    before = server_state(vps)
    out = run(vps, tmp_path, env=env)
    assert out.returncode == 2
    assert f"vpskit: {message}" in out.stdout
    assert server_state(vps) == before


APPS = [
    (lambda a: (a / "next.config.mjs").write_text("export default {}\n"), "does not set output: 'standalone'"),
    (lambda a: (a / "src/payload.config.ts").write_text("export default {}\n"), "does not use @payloadcms/db-postgres"),
    (lambda a: shutil.rmtree(a / "src/app/api/health"), "liveness route /api/health"),
    (lambda a: (a / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n"),
     "has 2 lock files (package-lock.json and pnpm-lock.yaml): which package manager builds it?"),
    # Payload pushes its schema only in development: without migrations production has no tables (issue 24).
    (lambda a: shutil.rmtree(a / "src/migrations"), "has no Payload migrations, so production would get no tables: "
     "create the first one in the app (npm run payload migrate:create initial"),
    (lambda a: (a / "package.json").write_text((a / "package.json").read_text().replace('">=20.9.0"', '"newest"')),
     'package.json engines.node "newest" is not a version range npm reads: write it as npm does'),
]


@pytest.mark.parametrize(("breakage", "message"), APPS,
                         ids=["not-standalone", "not-postgres", "no-health", "two-lock-files", "no-migrations",
                              "unreadable-engines"])
def test_app_that_cannot_be_deployed(vps, tmp_path, breakage, message):
    before = server_state(vps)
    out = run(vps, tmp_path, args=("--data", f"app_path={broken_app(tmp_path, breakage)}"))
    assert out.returncode == 2
    assert message in out.stdout
    assert server_state(vps) == before


def test_node_image_that_cannot_give_the_node_the_app_asks_for(vps, tmp_path):
    """issue 24: the app pins Node 24 (.nvmrc), node_image is set to a Node 22 image: refused before connecting."""
    app = broken_app(tmp_path, lambda a: (a / ".nvmrc").write_text("24\n"))
    before = server_state(vps)
    out = run(vps, tmp_path, args=("--data", f"app_path={app}", "--data", "node_image=node:22-bookworm-slim"))
    assert out.returncode == 2, out.stdout[-2000:]
    line = ('vpskit: node_image=node:22-bookworm-slim gives Node 22, but the app asks for package.json engines.node '
            '">=20.9.0" and .nvmrc 24: set node_image = "node:24-bookworm-slim", or leave it empty to have it picked')
    assert line in out.stdout and out.stdout.count("vpskit: ") == 1, out.stdout[-2000:]
    assert "Connecting to hosts" not in out.stdout
    assert server_state(vps) == before


def test_unreachable_host(vps, tmp_path):
    from tests.support import free_port

    port = free_port()  # nothing listens there
    out = run(vps, tmp_path, env={"VPSKIT_SSH_PORT": str(port)})
    assert out.returncode == 2
    assert f"vpskit: cannot reach 127.0.0.1:{port} (Connection refused): check VPSKIT_HOST" in out.stdout


def test_unknown_host_key(vps, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    before = server_state(vps)
    out = run(vps, tmp_path, env={"VPSKIT_SSH_KNOWN_HOSTS": str(empty)})
    assert out.returncode == 2
    assert f"vpskit: no host key for [127.0.0.1]:{vps.port} in {empty}: check the server's fingerprint" in out.stdout
    assert server_state(vps) == before


def test_changed_host_key_is_refused(vps, tmp_path):
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{vps.port} {WRONG_KEY}\n")
    before = server_state(vps)
    out = run(vps, tmp_path, env={"VPSKIT_SSH_KNOWN_HOSTS": str(wrong)})
    assert out.returncode != 0
    assert "SSH host key error (Host key for 127.0.0.1 does not match.)" in out.stdout
    assert server_state(vps) == before


def test_first_contact_is_an_explicit_opt_in(vps, tmp_path):
    """With VPSKIT_SSH_ACCEPT_NEW=true an unknown host key is accepted once and recorded."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    out = run(vps, tmp_path, deploy_file="tasks/stop.py",
              env={"VPSKIT_SSH_KNOWN_HOSTS": str(empty), "VPSKIT_SSH_ACCEPT_NEW": "true"})
    assert out.returncode == 0, out.stdout[-2000:]
    assert f"[127.0.0.1]:{vps.port}" in empty.read_text()


TASKS = [
    ("tasks/restore.py", "backup=../../etc/shadow", "backup='../../etc/shadow' is not a backup name"),
    ("tasks/logs.py", "service=web", "service='web' is not a service of the stack: use app or db"),
    ("tasks/logs.py", "lines=all", "lines='all' is not a number: use e.g. --data lines=200"),
    ("tasks/stop.py", "purge=everything", "purge='everything' does not name this app"),
    ("tasks/rollback.py", "version=v1;reboot", "version='v1;reboot' is not a release name"),
]


@pytest.mark.parametrize(("task", "data", "message"), TASKS, ids=[f"{t[0]}:{t[1]}" for t in TASKS])
def test_bad_task_option(vps, tmp_path, task, data, message):
    before = server_state(vps)
    out = run(vps, tmp_path, deploy_file=task, args=("--data", data))
    assert out.returncode != 0
    assert f"vpskit: {message}" in out.stdout
    assert server_state(vps) == before


def test_port_that_answers_without_ssh_gets_one_clear_line(vps, tmp_path):
    """A port that accepts connections but never speaks SSH (a firewall dropping after the handshake, a
    wrong port): one vpskit line naming host, port and the likely causes, not pyinfra's "No existing
    session"."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        out = run(vps, tmp_path, env={"VPSKIT_SSH_PORT": str(port)})
    assert out.returncode == 2
    assert (f"vpskit: 127.0.0.1:{port} accepts connections but no SSH server answered within 8s: a firewall on "
            "the server may be dropping SSH (ufw allowing another port?), or VPSKIT_SSH_PORT names the wrong "
            "port") in out.stdout
    assert "No existing session" not in out.stdout


@pytest.fixture(scope="module")
def login_vps(vps_factory):
    """A server of its own for the failed logins: after them sshd (OpenSSH 9.8+, PerSourcePenalties) refuses
    this address for a while, as a real server does (TROUBLESHOOTING 51), and the other cases need it."""
    return vps_factory("badlogin")


@pytest.mark.parametrize("what", ["key", "user"])
def test_refused_login(login_vps, tmp_path, what):
    vps = login_vps
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    env = {"VPSKIT_SSH_KEY": str(other)} if what == "key" else {"VPSKIT_SSH_USER": "nobody"}
    before = server_state(vps)
    out = run(vps, tmp_path, env=env)
    assert out.returncode != 0
    assert "Authentication error (username=" in out.stdout
    assert server_state(vps) == before


def test_an_address_sshd_holds_back_gets_one_line_saying_to_wait(login_vps, tmp_path):
    """Connections that end before logging in (as port scanners make) until sshd holds this address back: the
    run says so and what to do, not "a firewall" or pyinfra's banner error."""
    import socket

    def greeting() -> bytes:
        with socket.create_connection(("127.0.0.1", login_vps.port), timeout=5) as conn:
            conn.settimeout(8)
            return conn.recv(64)

    for _ in range(60):  # OpenSSH's defaults: 1 s per such connection, held back past 15 s
        if greeting().startswith(b"Not allowed"):
            break
    else:
        pytest.fail("sshd never held the address back (PerSourcePenalties off on this image?)")
    out = run(login_vps, tmp_path)
    assert out.returncode != 0
    assert (f"vpskit: 127.0.0.1:{login_vps.port}: the SSH server refuses this address for now (Not allowed at "
            "this time: sshd holds back an address after failed logins or too many connections): wait a minute, "
            "then run again (TROUBLESHOOTING 51)") in out.stdout
    assert "firewall" not in out.stdout
