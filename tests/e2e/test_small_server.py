"""The target server, proven (issue 23): a test VPS sized like a 1 GB / 1 CPU server, where the limit covers
everything it runs (systemd, sshd, dockerd and every container). On it: a first deploy from nothing sets the
server baseline (security updates, a bounded journal, SSH keys only once key login is proven; no swap: a
container-based server cannot have its own) and a second run changes nothing; limits that cannot fit are refused
before anything changes; a release under a probe and a writer costs no request and no OOM kill."""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
import time

import pytest

from tests.e2e.test_deploy import results
from tests.sites import CREDS
from tests.support import (
    Traffic,
    Webhook,
    free_port,
    http,
    jpeg,
    multipart,
    remove_variant,
    run_pyinfra,
    variant_image,
    wait_until,
)
from vpskit import memory

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

APP_DIR = "/opt/example"
# The health check's unit is there (its timer due only in 2099): the tests start it as its timer would.
ENV = {"VPSKIT_BACKUP_SCHEDULE": "", "VPSKIT_DRILL_SCHEDULE": "", "VPSKIT_HEALTH_SCHEDULE": "2099-01-01",
       "VPSKIT_UNATTENDED_UPGRADES": "true"}
HEALTH_UNIT = "vpskit-health-example.service"
FIGURES: list[str] = []
# ssh offering only password login: the methods the server still accepts are in its refusal.
PASSWORD_ONLY = ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
                 "-o", "BatchMode=yes", "-o", "NumberOfPasswordPrompts=0"]


def cgroup(vps) -> str:
    """The VPS container's memory cgroup on this machine (cgroup v1)."""
    full_id = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", vps.name], capture_output=True, text=True,
                             check=True).stdout.strip()
    return f"/sys/fs/cgroup/memory/docker/{full_id}"


def sh(vps, command: str, check: bool = True) -> str:
    return vps.exec("sh", "-c", command, check=check).stdout.strip()


def methods_offered(vps) -> str:
    """What sshd says it accepts to a client that offers only a password: "publickey" or "publickey,password"."""
    out = subprocess.run(["ssh", "-p", str(vps.port), "-o", f"UserKnownHostsFile={vps.known_hosts}",
                          "-o", "StrictHostKeyChecking=yes", *PASSWORD_ONLY, "deploy@127.0.0.1", "true"],
                         capture_output=True, text=True, timeout=30)
    found = re.search(r"Permission denied \(([^)]*)\)", out.stderr)
    assert found, out.stderr
    return found[1]


def oom_kills(vps) -> int:
    """The kernel's count of OOM kills (/proc/vmstat: in a test VPS, the machine's; no other test causes one)."""
    return int(sh(vps, "awk '$1 == \"oom_kill\" {print $2}' /proc/vmstat"))


def deploy(site, *data: str) -> subprocess.CompletedProcess:
    return run_pyinfra(site["vps"], site["env_file"], "deploy.py", *[a for d in data for a in ("--data", d)],
                       env=ENV)


@pytest.fixture(scope="module")
def site(vps_factory, tmp_path_factory):
    vps = vps_factory("small", memory="1g", cpus="1")
    # A server as a cloud image leaves it: password login on (the test bed's image has it off), a password set.
    sh(vps, "rm -f /etc/ssh/sshd_config.d/testbed.conf && printf 'PasswordAuthentication yes\\nPermitRootLogin no\\n'"
            " > /etc/ssh/sshd_config.d/50-cloud-init.conf && echo 'deploy:a-cloud-password-1' | chpasswd "
            "&& systemctl restart ssh")
    wait_until(lambda: vps.ssh("true", check=False, timeout=10).returncode == 0, 30, "SSH after its restart")
    before = methods_offered(vps)
    env_file = tmp_path_factory.mktemp("operator") / ".env"
    # Alerts go to a webhook receiver on the VPS itself (its loopback).
    hook = Webhook.start(vps)
    env_file.write_text("POSTGRES_PASSWORD=small-db-password\nPAYLOAD_SECRET=small-payload-secret-0123456789abcdef\n"
                        f"NOTIFY_URL=http://127.0.0.1:{hook.port}/hook\n")
    state = {"vps": vps, "env_file": env_file, "methods_before": before, "hook": hook}
    first = deploy(state)
    assert first.returncode == 0, first.stdout[-5000:]
    state["first"] = first
    local = free_port()
    state["tunnel"] = vps.forward(3000, local)
    state["base"] = f"http://127.0.0.1:{local}"
    wait_until(lambda: http("GET", f"{state['base']}/api/health/ready", timeout=3).status == 200, 120, "the site")
    assert http("POST", f"{state['base']}/api/users/first-register", CREDS).status in (200, 201)
    state["token"] = http("POST", f"{state['base']}/api/users/login", CREDS).json()["token"]
    backup = run_pyinfra(vps, env_file, "tasks/backup.py", env=ENV)  # the health check wants one
    assert backup.returncode == 0, backup.stdout[-3000:]
    yield state
    state["tunnel"].terminate()
    remove_variant("example:small-v2")
    print("\n" + "\n".join(FIGURES))


def test_the_vps_and_everything_it_runs_share_one_gigabyte(site):
    vps = site["vps"]
    assert sh(vps, f"cat {cgroup(vps)}/memory.limit_in_bytes") == str(2**30)
    # Its containers are nested below it (in the machine's hierarchy), so its limit is theirs too.
    app = sh(vps, f"docker inspect -f '{{{{.Id}}}}' $(cd {APP_DIR} && docker compose ps -q app)")
    assert sh(vps, f"ls -d {cgroup(vps)}/vps-containers/{app}") == f"{cgroup(vps)}/vps-containers/{app}"
    # What vpskit reads of the server: 1024 MB, no swap (the VPS's memory+swap is its memory).
    server = memory.Server.parse(vps.ssh(f"sudo bash -c {shlex.quote(memory.fact_command())}").stdout.splitlines())
    assert (server.ram_mb, server.swap_mb, server.virtualised_as) == (1024, 0, "docker")
    # A process that allocates past it, in a container of its own without a limit: the VPS's limit holds it.
    # The kernel reclaims the VPS's page cache first and OOM-kills when nothing is left to reclaim; with the
    # other processes re-reading their files that can take minutes (a server without swap freezes rather than
    # fails), so the wait is bounded and the hog stopped from here after it.
    image = sh(vps, f"docker inspect -f '{{{{.Config.Image}}}}' {app}")
    kills = oom_kills(vps)
    sh(vps, f"echo 0 > {cgroup(vps)}/memory.max_usage_in_bytes")
    hog = sh(vps, f"docker run -d --name hog --entrypoint node {image} -e "
                  "'const a = []; for (;;) a.push(Buffer.alloc(64 << 20, 1))'")
    started = time.monotonic()
    try:
        wait_until(lambda: oom_kills(vps) > kills, 60, "an OOM kill")
        FIGURES.append(f"a container without a limit allocating past the VPS's 1 GB: OOM-killed after "
                       f"{time.monotonic() - started:.0f}s")
    except AssertionError:
        FIGURES.append("a container without a limit allocating past the VPS's 1 GB: not OOM-killed within 60s "
                       "(the kernel kept reclaiming page cache), stopped by the test")
    finally:
        sh(vps, f"kill -9 $(cat {cgroup(vps)}/vps-containers/{hog}/cgroup.procs) 2>/dev/null; docker rm -f hog",
           check=False)
    # The VPS's memory reached its limit and stayed there (within the kernel's charge batch of a few pages).
    assert 2**30 - 2**26 <= int(sh(vps, f"cat {cgroup(vps)}/memory.max_usage_in_bytes")) <= 2**30 + 2**20
    wait_until(lambda: status(f"{site['base']}/api/health/ready") == 200, 120, "the site")


def test_a_first_deploy_sets_the_baseline_and_a_second_run_changes_nothing(site):
    vps, first = site["vps"], site["first"].stdout
    assert "swap: none made (the server is a container (docker): swap is its host's to give)" in first
    assert re.search(r"memory: \d+ MB of limits while serving|the memory limits need \d+ MB during a release "
                     r"\(app 2 x 448, db 256, proxy 64, system \d+\), the server has 1024 MB", first), first[-3000:]
    assert sh(vps, "dpkg-query -W -f '${Status}' unattended-upgrades") == "install ok installed"
    assert 'APT::Periodic::Unattended-Upgrade "1";' in sh(vps, "cat /etc/apt/apt.conf.d/20auto-upgrades")
    assert 'Automatic-Reboot "false"' in sh(vps, "cat /etc/apt/apt.conf.d/52vpskit-unattended-upgrades")
    assert "SystemMaxUse=200M" in sh(vps, "cat /etc/systemd/journald.conf.d/60-vpskit.conf")
    # Password login was on and is off; key login (this very test's) works.
    assert site["methods_before"] == "publickey,password"
    assert methods_offered(vps) == "publickey"
    assert vps.ssh("id -un").stdout.strip() == "deploy"
    again = deploy(site)
    assert again.returncode == 0, again.stdout[-3000:]
    rows = results(again.stdout)
    assert rows and all(success == "-" and nochange == "1" for success, _, nochange in rows.values()), rows


def test_limits_that_cannot_fit_are_refused_before_anything_changes(site):
    vps = site["vps"]
    files = f"sha256sum {APP_DIR}/docker-compose.yml {APP_DIR}/.env; docker ps -q --no-trunc | sort"
    before = sh(vps, files)
    out = deploy(site, "app_memory_limit=2g")
    assert out.returncode != 0
    lines = [ln for ln in out.stdout.splitlines() if "the memory limits need" in ln]
    assert len(lines) == 1 and re.search(r"the memory limits need 2\d\d\d MB while serving \(app 2048, db 256, "
                                         r"proxy 64, system \d+\), the server has 1024 MB of "
                                         r"memory and no swap: lower app_memory_limit", lines[0]), out.stdout[-2000:]
    assert sh(vps, files) == before


def test_key_login_that_cannot_be_proven_leaves_ssh_as_it_is(site):
    """sshd that logs nothing (LogLevel QUIET) cannot prove this connection used a key: left alone, said."""
    vps = site["vps"]
    sh(vps, "rm /etc/ssh/sshd_config.d/10-vpskit.conf && echo 'LogLevel QUIET' > /etc/ssh/sshd_config.d/05-quiet.conf"
            " && systemctl reload ssh")
    try:
        wait_until(lambda: methods_offered(vps) == "publickey,password", 30, "password login back on")
        out = deploy(site)
        assert out.returncode == 0, out.stdout[-3000:]
        assert "SSH password login left as it is: this connection could not prove key login (sshd's log does not " \
               "say how it logged in)" in out.stdout
        assert sh(vps, "ls /etc/ssh/sshd_config.d/").split() == ["05-quiet.conf", "50-cloud-init.conf"]
        assert methods_offered(vps) == "publickey,password"
    finally:
        sh(vps, "rm -f /etc/ssh/sshd_config.d/05-quiet.conf && systemctl reload ssh")
    again = deploy(site)  # sshd's log says it again: keys only
    assert again.returncode == 0 and methods_offered(vps) == "publickey", again.stdout[-3000:]


def test_a_release_under_traffic_and_a_20_mb_upload_costs_no_request_and_no_oom_kill(site, example_image, testbed):
    vps = site["vps"]
    # The next version: the running image under another tag, with a label of its own (another image id), as the
    # other modules' releases do: what is measured is the release on the server, not a `next build` here.
    variant_image(example_image, "example:small-v2", testbed)
    kills = oom_kills(vps)
    sh(vps, f"echo 0 > {cgroup(vps)}/memory.max_usage_in_bytes")
    idle = int(sh(vps, f"cat {cgroup(vps)}/memory.usage_in_bytes")) // 2**20
    released, upload = threading.Event(), {}

    def upload_during_the_release():
        """A 20 MB photo posted to Payload's media collection once the new app container runs beside the old."""
        wait_until(lambda: released.is_set() or sh(vps, f"cd {APP_DIR} && docker compose ps -q app | wc -l",
                                                   check=False) == "2", 600, "the release's second app container")
        upload["during"] = not released.is_set()
        body, ctype = multipart({"_payload": '{"alt": "a 20 MB photo"}'},
                                {"file": ("photo.jpg", jpeg(20 * 10**6), "image/jpeg")})
        t0 = time.monotonic()
        upload["answer"] = http("POST", f"{site['base']}/api/media", body,
                                {"Content-Type": ctype, "Authorization": f"JWT {site['token']}"}, timeout=180)
        upload["seconds"] = time.monotonic() - t0

    uploader = threading.Thread(target=upload_during_the_release)
    with Traffic(site["base"], site["token"]) as traffic:
        uploader.start()
        out = deploy(site, "app_version=small-v2", "backup_before_update=false")
        released.set()
        uploader.join(timeout=240)
    assert out.returncode == 0, out.stdout[-4000:]
    peak = int(sh(vps, f"cat {cgroup(vps)}/memory.max_usage_in_bytes")) // 2**20
    answer = upload["answer"]
    FIGURES.append(f"1 GB / 1 CPU VPS, a release under traffic: {traffic.summary()}; a 20 MB JPEG uploaded "
                   f"{'during it' if upload['during'] else 'after it'}: {answer.status} in {upload['seconds']:.1f}s; "
                   f"memory of the whole VPS (page cache included): {idle} MB before, peak {peak} MB of 1024")
    assert traffic.failures == 0 and traffic.failed_writes == 0, traffic.errors[:5]
    assert traffic.acknowledged and traffic.writes > 10
    assert upload["during"] and answer.status == 201, answer.body[:500]
    stored = http("GET", f"{site['base']}{answer.json()['doc']['url']}", timeout=60)
    assert stored.status == 200 and len(stored.body) == 20 * 10**6
    assert oom_kills(vps) == kills
    assert http("GET", f"{site['base']}/api/health", timeout=10).json()["version"] == "small-v2"


def status(url: str) -> int:
    """The HTTP status of a GET, 0 when nothing answers."""
    try:
        return http("GET", url, timeout=5).status
    except OSError:
        return 0


def health_timer_run(vps) -> subprocess.CompletedProcess:
    """The scheduled health check, started as its timer starts it; .stdout holds what it printed."""
    run = vps.exec("systemctl", "start", HEALTH_UNIT, check=False)
    run.stdout = vps.exec("journalctl", "-u", HEALTH_UNIT, "-n", "25", "--no-pager", "-o", "cat").stdout
    return run


def test_an_app_that_allocates_past_its_limit_is_restarted_reported_and_alerted_once(site):
    vps, hook = site["vps"], site["hook"]
    last = health_timer_run(vps)  # the last scheduled check: its counters kept
    assert last.returncode == 0, last.stdout
    hook.clear()
    app = sh(vps, f"cd {APP_DIR} && docker compose ps -q app")
    restarts = int(sh(vps, f"docker inspect -f '{{{{.RestartCount}}}}' {app}"))
    kills = oom_kills(vps)
    # A leak in the app: memory allocated in its container past its limit (448m). The app's own server is the one
    # the kernel picks (its score raised), as it would be were the leak in the app's own code.
    sh(vps, f"for p in $(cat {cgroup(vps)}/vps-containers/{app}/cgroup.procs); do echo 1000 > /proc/$p/oom_score_adj;"
            " done")
    vps.exec("docker", "exec", app, "node", "-e", "const a = []; for (;;) a.push(Buffer.alloc(32 << 20, 1))",
             check=False)
    wait_until(lambda: int(sh(vps, f"docker inspect -f '{{{{.RestartCount}}}}' {app}")) > restarts, 60,
               "Docker to restart the app")
    assert oom_kills(vps) > kills
    wait_until(lambda: sh(vps, f"docker inspect -f '{{{{.State.Health.Status}}}}' {app}") == "healthy", 180,
               "the restarted app to be healthy")
    # tasks/health.py says what happened since the last scheduled check, and keeps nothing.
    out = run_pyinfra(vps, site["env_file"], "tasks/health.py", env=ENV)
    assert out.returncode == 0, out.stdout[-3000:]
    assert re.search(r"warn oom: [1-9]\d* OOM kill\(s\) since the last check at", out.stdout), out.stdout[-3000:]
    assert re.search(r"warn example-app-\d+: Docker restarted it 1 time\(s\) since the last check", out.stdout)
    # The health timer alerts once: on the run that finds it, not on the next.
    assert health_timer_run(vps).returncode == 0
    assert health_timer_run(vps).returncode == 0
    texts = [m["body"]["text"] for m in hook.messages()]
    assert len(texts) == 1 and "OOM kill" in texts[0], texts
    assert re.search(r"example-app-\d+: Docker restarted it 1 time", texts[0]), texts


def test_a_proxy_killed_by_hand_is_started_again_by_the_health_timer_which_says_so_once(site):
    vps, hook = site["vps"], site["hook"]
    last = health_timer_run(vps)
    assert last.returncode == 0, last.stdout
    hook.clear()
    vps.exec("docker", "kill", "vpskit-proxy")
    wait_until(lambda: status(f"{site['base']}/api/health") != 200, 30, "the site down")
    repaired = health_timer_run(vps)
    assert repaired.returncode == 0, repaired.stdout
    assert status(f"{site['base']}/api/health") == 200
    assert health_timer_run(vps).returncode == 0
    texts = [m["body"]["text"] for m in hook.messages()]
    assert len(texts) == 1 and "proxy: was exited (stopped outside vpskit): started again" in texts[0], texts
    # Stopped on purpose with tasks/stop.py, the app stays stopped; a deploy starts it.
    assert run_pyinfra(vps, site["env_file"], "tasks/stop.py", env=ENV).returncode == 0
    assert health_timer_run(vps).returncode != 0
    assert sh(vps, f"cd {APP_DIR} && docker compose ps -q --status running") == ""
    assert deploy(site).returncode == 0
    wait_until(lambda: http("GET", f"{site['base']}/api/health/ready", timeout=5).status == 200, 120, "the site")
