"""The server's one proxy (issue 11): two apps on one server, each with its domain on 80/443 and a certificate
from a real ACME server (the test bed's pebble, reached over a Docker network the test creates), HTTP
redirected to HTTPS, the certificate kept across releases; an update of one app under a probe of both costs
neither a request; a redeploy with nothing changed restarts nothing, the proxy included."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import Traffic, free_port, http, run_pyinfra, variant_image, wait_until
from tests.testbed.vps import docker
from vpskit.settings import defaults

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

ROOT = Path(__file__).resolve().parents[2]
ACME_ROOT_ON_SERVER = "/etc/vpskit/acme-listener-ca.pem"
APPS = {"shop": {"domain": "shop.test", "port": 3000}, "blog": {"domain": "blog.test", "port": 3001}}


@pytest.fixture(scope="module")
def env_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("operator") / ".env"
    path.write_text("POSTGRES_PASSWORD=proxy-password\nPAYLOAD_SECRET=proxy-payload-secret-0123456789abcdef\n")
    return path


@pytest.fixture(scope="module")
def acme(vps_factory, testbed):
    """A VPS and the ACME test server on one network the test creates; the VPS trusts pebble's listener."""
    net = f"vpskit-acme-{os.getpid()}"
    name = f"vpskit-pebble-{os.getpid()}"
    docker("network", "create", "--label", f"vpskit.testbed.session={testbed}", net)
    # Started on the network, not connected to it later: the VPS's own Docker, running from boot, may have
    # taken the subnet the network would get for its docker0, and the connect would then fail.
    vps = vps_factory("proxy", network=net, docker_ready=True)
    docker("run", "-d", "--name", name, "--network", net, "--network-alias", "pebble",
           "--label", f"vpskit.testbed.session={testbed}", "vpskit-testbed/pebble")
    ca = docker("exec", name, "cat", "/etc/pebble/listener-ca.pem").stdout
    encoded = base64.b64encode(ca.encode()).decode()
    vps.ssh(f"sudo mkdir -p /etc/vpskit && echo {encoded} | base64 -d | sudo tee {ACME_ROOT_ON_SERVER} >/dev/null")
    ip = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}', name).stdout.strip()
    yield {"vps": vps, "pebble": name, "directory": f"https://{ip}:14000/dir"}
    docker("rm", "-f", name, check=False)
    docker("network", "disconnect", net, vps.name, check=False)
    docker("network", "rm", net, check=False)


def settings(app: str, directory: str) -> list[str]:
    a = APPS[app]
    data = {"app_name": app, "domain": a["domain"], "publish_port": a["port"],
            "acme_ca": directory, "acme_ca_root": ACME_ROOT_ON_SERVER, "acme_email": "ops@shop.test",
            "backup_before_update": "false", "backup_schedule": ""}
    return [x for k, v in data.items() for x in ("--data", f"{k}={v}")]


@pytest.fixture(scope="module")
def sites(acme, env_file, example_image):
    vps = acme["vps"]
    version = example_image.split(":", 1)[1]
    tunnels, state = [], {"vps": vps, "version": version, "pebble": acme["pebble"], "directory": acme["directory"]}
    for app in APPS:
        docker("tag", example_image, f"{app}:{version}")  # the example app, deployed under two names
        out = run_pyinfra(vps, env_file, "deploy.py", *settings(app, acme["directory"]))
        assert out.returncode == 0, out.stdout[-4000:]
    for remote in (80, 443, 3000, 3001):
        local = free_port()
        tunnels.append(vps.forward(remote, local))
        state[remote] = local
    for app, a in APPS.items():
        base = f"http://127.0.0.1:{state[a['port']]}"
        wait_until(lambda b=base: http("GET", f"{b}/api/health/ready", timeout=3).status == 200, 60, f"{app}")
        creds = {"email": f"ops@{app}.test", "password": "a long enough password"}
        assert http("POST", f"{base}/api/users/first-register", creds).status in (200, 201)
        state[app] = {"base": base, "token": http("POST", f"{base}/api/users/login", creds).json()["token"]}
    state["env_file"] = env_file
    yield state
    for t in tunnels:
        t.terminate()
    for app in APPS:
        docker("rmi", f"{app}:{version}", check=False)


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=30)


def issuing_root(sites, tmp_path) -> Path:
    pem = docker("exec", sites["pebble"], "wget", "-q", "--no-check-certificate", "-O", "-",
                 "https://localhost:15000/roots/0").stdout
    path = tmp_path / "pebble-root.pem"
    path.write_text(pem)
    return path


def served_certificate(sites, domain: str, root: Path) -> str:
    """The serial of the certificate the proxy serves for `domain`, verified against the ACME root."""
    port = sites[443]
    out = curl("-v", "-o", "/dev/null", "--resolve", f"{domain}:{port}:127.0.0.1", "--cacert", str(root),
               f"https://{domain}:{port}/api/health/ready")
    assert out.returncode == 0, out.stderr[-2000:]
    pem = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", domain],
                         input="", capture_output=True, text=True, timeout=30).stdout
    serial = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem, capture_output=True, text=True)
    return serial.stdout.strip()


def test_each_domain_gets_a_certificate_and_http_redirects(sites, tmp_path):
    root = issuing_root(sites, tmp_path)
    for a in APPS.values():
        port = sites[443]

        def https_ok(domain=a["domain"], port=port):
            return curl("-o", "/dev/null", "-w", "%{http_code}", "--resolve", f"{domain}:{port}:127.0.0.1",
                        "--cacert", str(root), f"https://{domain}:{port}/api/health/ready").stdout == "200"

        try:  # the proxy asks for the certificate when it loads the route: seconds, not minutes
            wait_until(https_ok, 90, f"a certificate for {a['domain']}", interval=1)
        except AssertionError as err:
            logs = sites["vps"].ssh("sudo docker logs --tail 30 vpskit-proxy 2>&1", check=False).stdout
            raise AssertionError(f"{err}\nproxy log:\n{logs}") from None
        redirect = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--resolve",
                        f"{a['domain']}:{sites[80]}:127.0.0.1", f"http://{a['domain']}:{sites[80]}/admin")
        code, location = redirect.stdout.split(" ", 1)
        assert code in ("301", "308") and location.startswith(f"https://{a['domain']}"), redirect.stdout
    sites["serial"] = served_certificate(sites, "shop.test", root)
    sites["root"] = root
    assert sites["serial"].startswith("serial=")


def test_an_update_of_one_app_costs_neither_app_a_request(sites, testbed):
    version = sites["version"]
    tag = "proxy-update"
    variant_image(f"shop:{version}", f"shop:{tag}", testbed)
    try:
        with Traffic(sites["shop"]["base"], sites["shop"]["token"]) as shop, \
                Traffic(sites["blog"]["base"], sites["blog"]["token"]) as blog:
            update = run_pyinfra(sites["vps"], sites["env_file"], "deploy.py", *settings("shop", sites["directory"]),
                                 "--data", f"app_version={tag}")
    finally:
        docker("rmi", f"shop:{tag}", check=False)
    assert update.returncode == 0, update.stdout[-3000:]
    assert http("GET", f"{sites['shop']['base']}/api/health").json()["version"] == tag
    assert http("GET", f"{sites['blog']['base']}/api/health").json()["version"] == version
    for (name, traffic), app in zip((("shop (updated)", shop), ("blog (beside it)", blog)), APPS, strict=True):
        print(f"\n{name}: {traffic.summary()}")
        if traffic.failures or traffic.failed_writes:  # what the app and its database said meanwhile
            root = next(d.value for d in defaults() if d.key == "app_root")  # the apps here keep the default
            logs = sites["vps"].ssh(f"cd {root}/{app} && sudo docker compose logs --since 5m --tail 30 app db 2>&1",
                                    check=False).stdout
            print(f"{app}'s log:\n{logs}")
        assert traffic.failures == 0 and traffic.failed_writes == 0, (name, traffic.summary(), traffic.errors[:5])
        assert traffic.acknowledged
    # The certificate survived the release (kept in the proxy's volume, not issued again).
    assert served_certificate(sites, "shop.test", sites["root"]) == sites["serial"]


def test_nothing_changed_restarts_nothing_proxy_included(sites):
    started = sites["vps"].ssh("sudo docker inspect -f '{{.Name}} {{.State.StartedAt}}' "
                               "$(sudo docker ps -q)").stdout
    again = run_pyinfra(sites["vps"], sites["env_file"], "deploy.py", *settings("blog", sites["directory"]))
    assert again.returncode == 0, again.stdout[-3000:]
    rows = [ln.split() for ln in again.stdout.splitlines() if ln.strip() and ln.split()[-1:] in (["1"], ["-"])]
    changed = [ln for ln in again.stdout.splitlines() if "Success" in ln and "No change" not in ln]
    assert "releasing" not in again.stdout and not [r for r in rows if r[-3:-2] == ["1"]], changed
    assert sites["vps"].ssh("sudo docker inspect -f '{{.Name}} {{.State.StartedAt}}' "
                            "$(sudo docker ps -q)").stdout == started


def test_maintenance_closes_one_app_while_the_other_keeps_answering(sites):
    """Issue 26, item 3: shop closed for maintenance answers 503 with Retry-After and the page on every path
    (HTTPS and the published port) but its health routes; blog, behind the same proxy, answers throughout."""
    shop, vps, env_file = sites["shop"]["base"], sites["vps"], sites["env_file"]
    args = settings("shop", sites["directory"])
    auth = {"Authorization": f"JWT {sites['shop']['token']}"}
    with Traffic(sites["blog"]["base"], sites["blog"]["token"]) as beside:
        closed = run_pyinfra(vps, env_file, "tasks/maintenance.py", *args, "--data", "on=true")
        assert closed.returncode == 0, closed.stdout[-3000:]
        assert "shop is closed: its proxy answers 503 with the maintenance page" in closed.stdout
        page = http("GET", f"{shop}/posts/1")
        assert page.status == 503, page.status
        assert page.headers.get("Retry-After") == "30" and "Back soon" in page.body.decode()
        assert http("POST", f"{shop}/api/posts", {"title": "while closed"}, headers=auth).status == 503
        assert http("GET", f"{shop}/api/health").status == 200  # a monitor still sees the app
        assert http("GET", f"{shop}/api/health/ready").status == 200
        https = curl("-k", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
                     f"shop.test:{sites[443]}:127.0.0.1", f"https://shop.test:{sites[443]}/")
        assert https.stdout == "503", https.stdout + https.stderr
        again = run_pyinfra(vps, env_file, "tasks/maintenance.py", *args, "--data", "on=true")
        assert again.returncode == 0 and "shop is already closed: nothing changed" in again.stdout, again.stdout[-2000:]
        opened = run_pyinfra(vps, env_file, "tasks/maintenance.py", *args, "--data", "off=true")
        assert opened.returncode == 0 and "shop is open again" in opened.stdout, opened.stdout[-2000:]
        assert http("POST", f"{shop}/api/posts", {"title": "open again"}, headers=auth).status == 201
    print(f"\nblog while shop was closed and opened: {beside.summary()}")
    assert beside.failures == 0 and beside.failed_writes == 0, (beside.summary(), beside.errors[:5])
    neither = run_pyinfra(vps, env_file, "tasks/maintenance.py", *args)
    assert neither.returncode != 0 and "--data on=true closes the site for maintenance" in neither.stdout


def test_an_upload_over_the_apps_limit_gets_413_with_a_message_and_one_under_it_succeeds(sites, tmp_path):
    """Issue 27, item 4: the example sets Payload's upload.limits.fileSize to 24 MB; the proxy passes requests up
    to that and 1 MB for the form (25 MB) and answers a larger one 413 with a message in Payload's
    error format, over HTTPS (HTTP/2, as a browser uploads from the admin) and on the published port."""
    import json

    token, port = sites["shop"]["token"], sites[443]
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(30 * 1024 * 1024))
    small.write_bytes(os.urandom(6 * 1024 * 1024))

    def upload(path: Path, *where: str) -> tuple[str, str]:
        out = curl("-o", "-", "-w", "\n%{http_code}", "-H", f"Authorization: JWT {token}",
                   "-F", '_payload={"alt": "x"}', "-F", f"file=@{path}", *where)
        body, _, code = out.stdout.rpartition("\n")
        return code, body

    https = ("-k", "--http2", "--resolve", f"shop.test:{port}:127.0.0.1", f"https://shop.test:{port}/api/media")
    message = {"errors": [{"message": "Too large: this site takes requests up to 25 MB (max_body_size)"}]}
    for where in (https, (f"{sites['shop']['base']}/api/media",)):
        code, body = upload(big, *where)
        assert code == "413" and json.loads(body) == message, (code, body[:300])
    code, body = upload(small, *https)
    assert code == "201", (code, body[:300])
    assert json.loads(body)["doc"]["filesize"] == 6 * 1024 * 1024
