"""`pyinfra inventory.py deploy.py` on a fresh VPS: Docker installed, the stack healthy, a second run that
changes nothing, a setting change that recreates only what it touches, and data that survives restarts,
a reboot of the VPS and a redeploy of a new version."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.support import free_port, http, multipart, remove_variant, run_pyinfra, variant_image, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pa$$ w'o\"rd with spaces"
SECRET = "e2e-payload-secret-0123456789abcdefghijkl"
APP_DIR = "/opt/example"


def pyinfra(vps, env_file: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_pyinfra(vps, env_file, "deploy.py", *extra)


def results(out: str) -> dict[str, tuple[str, str, str]]:
    """The pyinfra results table: operation name -> (success, error, no change)."""
    rows = {}
    table = out.split("--> Results:", 1)[1]
    for line in table.splitlines()[2:]:
        m = re.match(r"^\s+(.+?)\s+1\s+(\S+)\s+(\S+)\s+(\S+)\s*$", line)
        if m and not m.group(1).startswith("Grand total"):
            rows[m.group(1)] = m.groups()[1:]
    return rows


def containers(vps) -> dict[str, dict]:
    ids = vps.ssh("sudo docker ps -aq --filter label=com.docker.compose.project=example").stdout.split()
    info = json.loads(vps.ssh(f"sudo docker inspect {' '.join(ids)}").stdout)
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in info}


@pytest.fixture(scope="module")
def env_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("operator") / ".env"
    path.write_text(f"POSTGRES_PASSWORD='{PASSWORD.replace(chr(39), chr(92) + chr(39))}'\nPAYLOAD_SECRET={SECRET}\n")
    return path


@pytest.fixture(scope="module")
def site(vps_factory, env_file):
    """A fresh VPS after one deploy, with an SSH tunnel to the app's published port."""
    vps = vps_factory("deploy")
    first = pyinfra(vps, env_file, "--debug")
    assert first.returncode == 0, first.stdout[-4000:] + (first.stderr or "")[-4000:]
    local = free_port()
    tunnel = vps.forward(3000, local)
    base = f"http://127.0.0.1:{local}"
    wait_until(lambda: http("GET", f"{base}/api/health", timeout=3).status == 200, 30, "the SSH tunnel")
    state = {"vps": vps, "base": base, "first": first, "tunnel": tunnel, "local": local}
    yield state
    state["tunnel"].terminate()  # the tunnel in use now: reopen_tunnel() replaces it
    state["tunnel"].wait(timeout=10)
    remove_variant("example:e2e-v2")


def reopen_tunnel(site) -> None:
    site["tunnel"].terminate()
    site["tunnel"].wait(timeout=10)
    site["tunnel"] = site["vps"].forward(3000, site["local"])
    wait_until(lambda: http("GET", f"{site['base']}/api/health/ready", timeout=3).status == 200, 180,
               "the app to answer ready through a new tunnel")


def test_first_deploy_installs_docker_and_serves_health(site):
    vps_host = site["vps"].testinfra_host()
    assert vps_host.package("docker.io").is_installed
    assert vps_host.service("docker").is_running and vps_host.service("docker").is_enabled
    assert "http://127.0.0.1:3000" in site["first"].stdout
    live = http("GET", f"{site['base']}/api/health")
    assert live.status == 200 and live.json()["status"] == "ok"
    ready = http("GET", f"{site['base']}/api/health/ready")
    assert ready.status == 200 and ready.json()["status"] == "ready"


def test_every_container_healthy_and_app_not_root(site):
    stack = containers(site["vps"])
    assert set(stack) == {"app", "db"}
    for service, c in stack.items():
        assert c["State"]["Health"]["Status"] == "healthy", service
    app = stack["app"]["Name"].lstrip("/")
    uid = site["vps"].ssh(f"sudo docker exec {app} id -u").stdout.strip()
    assert uid != "0"
    # As the VPS sees it: every process of the app container but the init runs as uid 1000, none as root.
    top = site["vps"].ssh(f"sudo docker top {app}").stdout.splitlines()[1:]
    server = [ln.split() for ln in top if "next-server" in ln or "server.js" in ln]
    assert server and all(cols[0] not in ("root", "0") for cols in server), top


def test_postgres_not_published(site):
    stack = containers(site["vps"])
    assert not stack["db"]["HostConfig"]["PortBindings"]
    listeners = site["vps"].ssh("ss -Hltn").stdout
    assert ":5432 " not in listeners
    # The app is never published itself: the server's proxy owns the port, on 127.0.0.1 by default.
    assert not stack["app"]["HostConfig"]["PortBindings"]
    proxy = json.loads(site["vps"].ssh("sudo docker inspect vpskit-proxy").stdout)[0]
    assert [p["HostIp"] for p in proxy["HostConfig"]["PortBindings"]["3000/tcp"]] == ["127.0.0.1"]


def test_server_env_file_is_private(site):
    f = site["vps"].testinfra_host().file(f"{APP_DIR}/.env")
    assert f.mode == 0o600 and f.user == "deploy"


def test_app_container_is_hardened(site):
    app = containers(site["vps"])["app"]["HostConfig"]
    assert "no-new-privileges:true" in app["SecurityOpt"]
    assert app["CapDrop"] == ["ALL"] and not app["CapAdd"]
    assert app["ReadonlyRootfs"] is True
    db = containers(site["vps"])["db"]["HostConfig"]
    assert "no-new-privileges:true" in db["SecurityOpt"] and db["CapDrop"] == ["ALL"]


def test_secrets_appear_nowhere(site, env_file):
    """After a full deploy and a backup: not in pyinfra's --debug output, the image's history or files, the
    containers' logs."""
    from urllib.parse import quote

    secrets = [PASSWORD, quote(PASSWORD, safe=""), SECRET]
    backup = run_pyinfra(site["vps"], env_file, "tasks/backup.py", "--debug")
    assert backup.returncode == 0, backup.stdout[-2000:]
    image = containers(site["vps"])["app"]["Config"]["Image"]
    vps = site["vps"]
    places = {
        "deploy --debug output": site["first"].stdout,
        "backup --debug output": backup.stdout,
        "docker history": vps.ssh(f"sudo docker history --no-trunc {image}").stdout,
        "image config": vps.ssh(f"sudo docker image inspect {image}").stdout,
        "container logs": vps.ssh("cd /opt/example && sudo docker compose logs --no-color").stdout,
    }
    for where, text in places.items():
        assert text, where
        for secret in secrets:
            assert secret not in text, f"a secret appears in the {where}"
    # The image's files: export a container made from it and search every byte.
    for secret in secrets:
        found = vps.ssh(f"c=$(sudo docker create {image}) && sudo docker export $c | grep -a -c -F -- "
                        f"{shlex.quote(secret)}; sudo docker rm $c >/dev/null", check=False).stdout.split()
        assert found and found[0] == "0", "a secret appears in the image's filesystem"


def test_second_run_changes_nothing(site, env_file):
    before = {s: (c["Id"], c["State"]["StartedAt"]) for s, c in containers(site["vps"]).items()}
    again = pyinfra(site["vps"], env_file)
    assert again.returncode == 0, again.stdout[-3000:]
    rows = results(again.stdout)
    assert rows and all(success == "-" and nochange == "1" for success, _, nochange in rows.values()), rows
    after = {s: (c["Id"], c["State"]["StartedAt"]) for s, c in containers(site["vps"]).items()}
    assert after == before


def test_dry_run_shows_what_would_change(site, env_file):
    dry = run_pyinfra(site["vps"], env_file, "deploy.py", "--dry", "--data", "app_memory_limit=700m")
    assert dry.returncode == 0
    rows = [re.split(r"\s{2,}", ln.strip()) for ln in dry.stdout.split("Detected changes:")[1].splitlines()
            if "(127.0.0.1:" in ln]
    changed = [row[0] for row in rows if row[1] != "-"]  # the "Change" column, not "Conditional Change"
    assert changed[:2] == ["App files, .env (mode 600), scripts and units", "Stack up and healthy"]
    # The daemon-reload depends on the push; pyinfra may or may not list it as a predicted change.
    assert set(changed[2:]) <= {"Reload systemd when the units changed"}
    compose = site["vps"].ssh(f"sudo cat {APP_DIR}/docker-compose.yml").stdout
    assert "700m" not in compose


def test_memory_limit_change_recreates_only_the_app(site, env_file):
    before = containers(site["vps"])
    changed = pyinfra(site["vps"], env_file, "--data", "app_memory_limit=768m")
    assert changed.returncode == 0, changed.stdout[-3000:]
    after = containers(site["vps"])
    assert after["db"]["Id"] == before["db"]["Id"]
    assert after["app"]["Id"] != before["app"]["Id"]
    assert after["app"]["HostConfig"]["Memory"] == 768 * 1024 * 1024
    reopen_tunnel(site)


@pytest.fixture(scope="module")
def content(site):
    """A post and an uploaded media file, created through the REST API."""
    base = site["base"]
    creds = {"email": "ops@example.com", "password": "a long enough password"}
    assert http("POST", f"{base}/api/users/first-register", creds).status in (200, 201)
    token = http("POST", f"{base}/api/users/login", creds).json()["token"]
    auth = {"Authorization": f"JWT {token}"}
    post = http("POST", f"{base}/api/posts", {"title": "Survives everything"}, headers=auth)
    assert post.status == 201, post.body[:300]
    data = os.urandom(8192)
    body, ctype = multipart({"_payload": '{"alt": "blob"}'}, {"file": ("blob.bin", data, "application/octet-stream")})
    media = http("POST", f"{base}/api/media", body, headers={**auth, "Content-Type": ctype})
    assert media.status == 201, media.body[:300]
    return {"auth": creds, "post": post.json()["doc"]["id"], "media": media.json()["doc"],
            "sha": hashlib.sha256(data).hexdigest()}


def assert_content(site, content) -> None:
    base = site["base"]
    token = http("POST", f"{base}/api/users/login", content["auth"]).json()["token"]
    auth = {"Authorization": f"JWT {token}"}
    post = http("GET", f"{base}/api/posts/{content['post']}", headers=auth)
    assert post.status == 200 and post.json()["title"] == "Survives everything"
    blob = http("GET", f"{base}{content['media']['url']}", headers=auth)
    assert blob.status == 200 and hashlib.sha256(blob.body).hexdigest() == content["sha"]


def test_data_survives_compose_restart(site, content):
    site["vps"].ssh(f"cd {APP_DIR} && sudo docker compose restart", timeout=180)
    reopen_tunnel(site)
    assert_content(site, content)


def test_data_survives_down_and_up(site, content):
    site["vps"].ssh(f"cd {APP_DIR} && sudo docker compose down && sudo docker compose up -d --wait", timeout=300)
    reopen_tunnel(site)
    assert_content(site, content)


def test_data_survives_a_reboot_of_the_vps(site, content):
    site["vps"].restart()
    # Nobody runs compose after the reboot: systemd starts Docker, Docker's restart policy the stack.
    wait_until(lambda: all(c["State"]["Health"]["Status"] == "healthy" for c in containers(site["vps"]).values()),
               240, "the stack to come back healthy by itself after the reboot")
    reopen_tunnel(site)
    assert_content(site, content)


def test_data_survives_a_redeploy_of_a_new_version(site, env_file, content, example_image, testbed):
    variant_image(example_image, "example:e2e-v2", testbed)  # the next version (removed when the module ends)
    redeploy = pyinfra(site["vps"], env_file, "--data", "app_version=e2e-v2", "--data", "app_memory_limit=768m")
    assert redeploy.returncode == 0, redeploy.stdout[-3000:]
    reopen_tunnel(site)
    assert http("GET", f"{site['base']}/api/health").json()["version"] == "e2e-v2"
    assert_content(site, content)


WATCHER = """
import os, sys, time
secret = bytes.fromhex(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
seen = set()
while time.monotonic() < deadline and not os.path.exists("/run/vpskit-watch.stop"):
    for top in ("/tmp", "/var/tmp", "/opt/example", "/home/deploy"):
        for folder, _, names in os.walk(top):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    with open(path, "rb") as f:
                        if secret in f.read(1 << 20):
                            seen.add(path)
                except OSError:
                    pass
print("\\n".join(sorted(seen)), flush=True)
"""


def watch_for_readable_copies(vps, secret: str):
    """Starts a watcher on the server, as the unprivileged user nobody, that keeps reading every file it may
    under /tmp, /var/tmp, /opt/example and /home/deploy, and records each one that holds `secret`."""
    vps.exec("sh", "-c", "cat > /usr/local/lib/vpskit-watch.py && rm -f /run/vpskit-watch.stop "
             "/run/vpskit-watch.out && touch /run/vpskit-watch.out && chown nobody /run/vpskit-watch.out",
             input=WATCHER)
    vps.exec("sh", "-c", "runuser -u nobody -- python3 /usr/local/lib/vpskit-watch.py "
             f"{secret.encode().hex()} 600 > /run/vpskit-watch.out 2>&1 < /dev/null &")

    def stop() -> list[str]:
        vps.exec("touch", "/run/vpskit-watch.stop")
        wait_until(lambda: vps.exec("pgrep", "-f", "vpskit-watch.py", check=False).returncode != 0, 30,
                   "the watcher to stop")
        return vps.exec("cat", "/run/vpskit-watch.out").stdout.split()

    return stop


def test_rotated_secret_never_shown_even_with_diff(site, env_file):
    """Changing a secret pushes the new .env and recreates the app; --diff and --debug show neither value,
    and no other user on the server can read it at any moment of the upload."""
    new_secret = "rotated-payload-secret-abcdefghijklmnopqrstuvwxyz"
    before = containers(site["vps"])
    env_file.write_text(env_file.read_text().replace(SECRET, new_secret))
    stop_watching = watch_for_readable_copies(site["vps"], new_secret)
    try:
        out = pyinfra(site["vps"], env_file, "--diff", "--debug", "--data", "app_version=e2e-v2",
                      "--data", "app_memory_limit=768m")
    finally:
        readable = stop_watching()
    assert out.returncode == 0, out.stdout[-3000:]
    assert readable == [], f"other users could read the new secret in {readable}"
    assert "App files, .env (mode 600), scripts and units" in out.stdout
    for secret in (SECRET, new_secret, PASSWORD):
        assert secret not in out.stdout
    assert f"PAYLOAD_SECRET=\"{new_secret}\"" in site["vps"].ssh(f"sudo cat {APP_DIR}/.env").stdout
    after = containers(site["vps"])
    assert after["app"]["Id"] != before["app"]["Id"]  # the app now runs with the new secret
    assert f"PAYLOAD_SECRET={new_secret}" in after["app"]["Config"]["Env"]
    reopen_tunnel(site)


def test_uploads_land_in_a_private_folder(site):
    """Every upload (the .env included) lands in a folder only the SSH user and root can enter."""
    assert site["vps"].exec("stat", "-c", "%a %U", f"{APP_DIR}/.upload").stdout.split() == ["700", "deploy"]
    assert site["vps"].exec("ls", "-A", f"{APP_DIR}/.upload").stdout == ""


def test_app_behind_a_proxy_network_only(site, env_file):
    """publish_port = 0 with proxy_network: nothing published on the server, the app reachable by name from
    the proxy's network, and the health task checks it from inside. Last here: it changes how the app is
    reached."""
    vps = site["vps"]
    vps.ssh("sudo docker network create web")
    out = pyinfra(vps, env_file, "--data", "publish_port=0", "--data", "proxy_network=web",
                  "--data", "app_version=e2e-v2", "--data", "app_memory_limit=768m")
    assert out.returncode == 0, out.stdout[-3000:]
    app = containers(vps)["app"]
    assert not app["HostConfig"]["PortBindings"]
    assert "web" in app["NetworkSettings"]["Networks"]
    assert ":3000 " not in vps.ssh("ss -Hltn").stdout
    probe = vps.ssh(f"sudo docker run --rm --network web --entrypoint node {app['Config']['Image']} -e "
                    "\"fetch('http://app:3000/api/health/ready').then(r => console.log(r.status))\"", timeout=60)
    assert probe.stdout.strip() == "200"
    health = run_pyinfra(vps, env_file, "tasks/health.py", "--data", "publish_port=0", "--data", "proxy_network=web")
    assert health.returncode == 0, health.stdout[-3000:]
    assert "/api/health/ready: 200" in health.stdout
