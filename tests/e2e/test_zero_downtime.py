"""Releases under traffic (issue 11): a probe (GET /api/health/ready, ~25 req/s) and a writer (POST /api/posts
as a logged-in user) run through each case, through the server's proxy. In every case: no failed request, no
failed write, every acknowledged write still there, the right version serving at the end; failed cases exit
non-zero with one line naming the cause."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import Traffic, free_port, http, popen_pyinfra, run_pyinfra, variant_image, wait_until
from tests.testbed.vps import docker
from vpskit.server.history import LogLine

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = "/opt/example"
FIGURES: list[str] = []


@pytest.fixture(scope="module")
def env_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("operator") / ".env"
    path.write_text("POSTGRES_PASSWORD=zdt-password\nPAYLOAD_SECRET=zdt-payload-secret-0123456789abcdef01\n")
    return path


@pytest.fixture(scope="module")
def site(vps_factory, env_file, example_image):
    vps = vps_factory("zdt", docker_ready=True)
    first = run_pyinfra(vps, env_file, "deploy.py", "--data", "backup_before_update=false")
    assert first.returncode == 0, first.stdout[-4000:]
    local = free_port()
    state = {"vps": vps, "local": local, "base": f"http://127.0.0.1:{local}", "env_file": env_file,
             "good": example_image.split(":", 1)[1]}
    state["tunnel"] = vps.forward(3000, local)
    wait_until(lambda: http("GET", f"{state['base']}/api/health/ready", timeout=3).status == 200, 60, "the tunnel")
    creds = {"email": "ops@example.com", "password": "a long enough password"}
    assert http("POST", f"{state['base']}/api/users/first-register", creds).status in (200, 201)
    state["token"] = http("POST", f"{state['base']}/api/users/login", creds).json()["token"]
    state["variants"] = []
    yield state
    state["tunnel"].terminate()
    for tag in state["variants"]:  # images this module built (labelled with the session) go with it
        docker("rmi", "-f", f"example:{tag}", check=False)
    print("\n" + "\n".join(FIGURES))


def variant(site, testbed, tag: str, cmd: str = "") -> str:
    """An image of the running version under another tag (a different image id: a label), optionally with
    another command; deployed with --data app_version=TAG."""
    variant_image(f"example:{site['good']}", f"example:{tag}", testbed, cmd)
    site["variants"].append(tag)
    return tag


def last_logged(vps) -> LogLine:
    return LogLine.parse(vps.ssh(f"sudo tail -n 1 {APP_DIR}/releases/log").stdout)


def deploy(site, *data: str) -> subprocess.CompletedProcess:
    args = [a for d in ("backup_before_update=false", *data) for a in ("--data", d)]
    return run_pyinfra(site["vps"], site["env_file"], "deploy.py", *args)


def serving(site) -> str:
    return http("GET", f"{site['base']}/api/health").json()["version"]


def check_traffic(site, traffic: Traffic, case: str) -> None:
    """No failed request or write, and every acknowledged post still there."""
    FIGURES.append(f"{case}: {traffic.summary()}")
    assert traffic.requests >= 20 * (traffic.ended - traffic.started), traffic.summary()
    assert traffic.failures == 0 and traffic.failed_writes == 0, (traffic.summary(), traffic.errors[:5])
    assert traffic.acknowledged, "the writer got no write acknowledged"
    auth = {"Authorization": f"JWT {site['token']}"}
    for post_id in traffic.acknowledged[:: max(1, len(traffic.acknowledged) // 20)] + traffic.acknowledged[-3:]:
        assert http("GET", f"{site['base']}/api/posts/{post_id}", headers=auth).status == 200, post_id


def one_line_reason(out: str) -> str:
    """The failed release's reason: the last `vpskit release:` line of the run."""
    lines = [ln for ln in out.splitlines() if "vpskit release:" in ln]
    return lines[-1] if lines else ""


def test_a_good_update_costs_no_request(site, testbed):
    tag = variant(site, testbed, "zdt-good-1")
    with Traffic(site["base"], site["token"]) as traffic:
        out = deploy(site, f"app_version={tag}")
    assert out.returncode == 0, out.stdout[-3000:]
    site["current"] = serving(site)
    assert "answers ready" in out.stdout and "proxy switched to example-app-" in out.stdout
    assert site["current"] == tag
    check_traffic(site, traffic, "good update")


@pytest.mark.parametrize("case,cmd,reason", [
    ("never ready", "setInterval(() => {}, 1000)", r"did not answer ready within 30s"),
    ("exits at once", "console.error('zdt: cannot start'); process.exit(3)",
     r"(exited with code 3|crashed and was restarted)"),
])
def test_a_version_that_cannot_serve_is_thrown_away_while_the_old_one_serves(site, testbed, case, cmd, reason):
    before = serving(site)
    tag = variant(site, testbed, "zdt-" + case.replace(" ", "-"), cmd)
    start = time.monotonic()
    with Traffic(site["base"], site["token"]) as traffic:
        out = deploy(site, f"app_version={tag}", "health_timeout=30")
    took = time.monotonic() - start
    docker("rmi", "-f", f"example:{tag}", check=False)
    assert out.returncode != 0
    line = one_line_reason(out.stdout)
    assert re.search(reason, line) and f"version {tag} was not released; {before} keeps serving" in line, line
    assert serving(site) == before
    check_traffic(site, traffic, case)
    # The release itself (after the image was shipped) gave up within health_timeout plus the drain, and some
    # seconds for the database check and the clean-up: its duration is in the server's release log.
    logged = LogLine.parse(site["vps"].ssh(f"sudo tail -n 1 {APP_DIR}/releases/log").stdout)
    assert logged.version == tag and logged.result == "release:failed" and int(logged.seconds) <= 30 + 10 + 15, logged
    FIGURES[-1] += f"; the release gave up after {logged.seconds}s, the whole run after {took:.0f}s (health_timeout 30)"
    # Only the new container went: one app container, the one that served before.
    assert len(site["vps"].ssh(f"cd {APP_DIR} && sudo docker compose ps -q app").stdout.split()) == 1


def test_a_port_taken_on_the_server_stops_the_deploy_before_anything_changes(site):
    vps = site["vps"]
    before = serving(site)
    vps.ssh("sudo docker run -d --name squatter -p 127.0.0.1:3001:80 caddy:2 >/dev/null")
    try:
        with Traffic(site["base"], site["token"]) as traffic:
            out = deploy(site, "publish_port=3001")
    finally:
        vps.ssh("sudo docker rm -f squatter >/dev/null", check=False)
    assert out.returncode != 0
    assert "port 3001 is already in use on the server by another program: free it, or set publish_port to a " \
           "free port; nothing was changed" in out.stdout
    assert "Traceback" not in out.stdout  # the refusal's line alone
    assert serving(site) == before
    check_traffic(site, traffic, "port taken")
    assert "3001" not in vps.ssh(f"sudo cat {APP_DIR}/docker-compose.yml /opt/vpskit-proxy/docker-compose.yml").stdout


def test_rollback_task_switches_back_without_a_failed_request(site, testbed):
    before = serving(site)
    listed = site["vps"].ssh(f"sudo {APP_DIR}/bin/vpskit-server release list --app-dir {APP_DIR}").stdout
    if before == site["good"] or site["good"] not in listed:
        pytest.fail(f"needs a release after {site['good']} to go back from (releases: {listed})")
    with Traffic(site["base"], site["token"]) as traffic:
        out = run_pyinfra(site["vps"], site["env_file"], "tasks/rollback.py")
    assert out.returncode == 0, out.stdout[-3000:]
    assert f"rolled back from {before} to {site['good']}" in out.stdout
    assert serving(site) == site["good"]
    check_traffic(site, traffic, "rollback task")
    site["current"] = site["good"]
    listing = run_pyinfra(site["vps"], site["env_file"], "tasks/rollback.py", "--data", "list=true")
    assert "release log" in listing.stdout and "rollback:ok" in listing.stdout and "release:failed" in listing.stdout


def test_two_deploys_at_once_are_serialized(site, testbed):
    """Two deploys of different versions started at once, each with its backup before the update (issue 25): one
    outcome per deploy, and a true one: released (the release log says so), or refused in one line naming the
    other deploy's version and who ran it (and the log records no release of it); never both failed."""
    a, b = variant(site, testbed, "zdt-a"), variant(site, testbed, "zdt-b")
    before = len(site["vps"].ssh(f"sudo cat {APP_DIR}/releases/log").stdout.splitlines())
    with Traffic(site["base"], site["token"]) as traffic:
        procs = {tag: popen_pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", f"app_version={tag}")
                 for tag in (a, b)}
        outs = {tag: p.communicate(timeout=900)[0] for tag, p in procs.items()}
    codes = {tag: procs[tag].returncode for tag in procs}
    assert 0 in codes.values(), {tag: out[-2500:] for tag, out in outs.items()}
    log = [LogLine.parse(ln) for ln in site["vps"].ssh(f"sudo cat {APP_DIR}/releases/log").stdout.splitlines()[before:]]
    released = [ln.version for ln in log if ln.result == "release:ok"]
    assert serving(site) == released[-1]
    for tag, code in codes.items():
        other = b if tag == a else a
        if code == 0:
            assert tag in released, (tag, log)
        else:  # refused before its release began: one line naming the other deploy; nothing of it released
            assert f"replaced on the server by another deploy (version {other} by " in outs[tag], outs[tag][-2000:]
            assert tag not in released and codes[other] == 0
    check_traffic(site, traffic, f"two deploys at once (exit codes {sorted(codes.values())})")
    FIGURES.append(f"two deploys at once with backups: exit codes {sorted(codes.values())}, released {released}")
    site["current"] = released[-1]


def test_a_client_killed_during_the_release_does_not_stop_it(site, testbed):
    tag = variant(site, testbed, "zdt-killed")
    vps = site["vps"]
    with Traffic(site["base"], site["token"]) as traffic:
        proc = popen_pyinfra(vps, site["env_file"], "deploy.py", "--data", f"app_version={tag}",
                             "--data", "backup_before_update=false")
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "waiting up to" in line and "to answer ready" in line:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # The server finishes the release on its own.
        wait_until(lambda: last_logged(vps).version == tag, 300, "the server to finish the release")
    assert seen, "the deploy printed nothing before it was killed"
    assert last_logged(vps).result == "release:ok"
    assert serving(site) == tag
    check_traffic(site, traffic, "client killed mid-release")
    again = deploy(site, f"app_version={tag}")
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"last release attempt: {tag} (release:ok" in again.stdout
    assert "Stack up and healthy" in again.stdout and "releasing" not in again.stdout
    site["current"] = tag
