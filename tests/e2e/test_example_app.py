"""The reference app in example/, as the image vpskit builds of it (`npm ci` + `next build` in its Dockerfile, the
image every example deploy of the run ships), run beside the postgres stand-in: migrations applied on a fresh
database, health and readiness, the REST API, uploads in MEDIA_DIR, and readiness that follows the database down
and back up without an app restart."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support import Postgres, free_port, http, multipart, wait_until
from tests.testbed.vps import LABEL, docker, network, remove_network

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example"
SECRET = "test-payload-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def net(testbed):
    name = network(f"vpskit-example-{testbed}", testbed)
    yield name
    remove_network(name)


@pytest.fixture(scope="module")
def db(testbed, net):
    pg = Postgres(name=f"vpskit-example-db-{testbed}", volume=f"vpskit-example-db-{testbed}", session=testbed,
                  password="pa$$ word'\"quoted", port=free_port())
    pg.run()
    docker("network", "connect", "--alias", "db", net, pg.name)
    pg.wait_ready()
    yield pg
    docker("rm", "-f", pg.name, check=False)
    docker("volume", "rm", "-f", pg.volume, check=False)


def running(name: str) -> bool:
    """The container runs and was never restarted (no restart policy: a crash would leave it exited)."""
    return docker("inspect", "-f", "{{.State.Running}} {{.RestartCount}}", name).stdout.split() == ["true", "0"]


@pytest.fixture(scope="module")
def app(example_image, db, net, testbed, tmp_path_factory):
    """The example image's server, published on 127.0.0.1, against a fresh database; uploads in a host folder."""
    port, name = free_port(), f"vpskit-example-app-{testbed}"
    media = tmp_path_factory.mktemp("media")
    media.chmod(0o777)  # the image runs as uid 1000
    env = {"DATABASE_URI": f"postgresql://{db.user}:{quote(db.password, safe='')}@db:5432/{db.db}",
           "PAYLOAD_SECRET": SECRET, "APP_VERSION": "test-1",
           # Payload's own switch: log a telemetry event instead of sending it (a config that forgets
           # `telemetry: false` shows up in the log, and nothing leaves this machine either way), with its
           # state in a writable scratch folder: with none writable, Payload gives up before it would send.
           "PAYLOAD_TELEMETRY_DEBUG": "1", "XDG_CONFIG_HOME": "/tmp/xdg"}
    docker("run", "-d", "--name", name, "--label", f"{LABEL}=example-app", "--label", f"{LABEL}.session={testbed}",
           "--network", net, "-p", f"127.0.0.1:{port}:3000", "-v", f"{media}:/data/media",
           *(a for k, v in env.items() for a in ("-e", f"{k}={v}")), example_image)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http("GET", f"{base}/api/health/ready", timeout=5).status == 200, 120,
                   "the example app to become ready")
        yield {"base": base, "name": name, "media": media}
    finally:
        docker("rm", "-f", name, check=False)


def log(app) -> str:
    out = docker("logs", app["name"], check=False)
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def token(app):
    creds = {"email": "admin@example.com", "password": "correct horse battery staple"}
    first = http("POST", f"{app['base']}/api/users/first-register", creds)
    assert first.status in (200, 201), first.body[:500]
    login = http("POST", f"{app['base']}/api/users/login", creds)
    assert login.status == 200, login.body[:500]
    return login.json()["token"]


def test_no_telemetry_at_start_or_in_the_admin(app):
    """`telemetry: false` in payload.config.ts: Payload neither reports its start nor the admin's first load
    (with PAYLOAD_TELEMETRY_DEBUG set it would log each event it was about to send)."""
    assert http("GET", f"{app['base']}/admin", timeout=60).status == 200
    # Both events would be logged by now: the start's before readiness (which the fixture waited for), the
    # admin's while its page rendered.
    assert "Telemetry Event" not in log(app)


def test_migrations_applied_on_a_fresh_database(app, db):
    with db.connect() as conn:
        names = [r[0] for r in conn.execute("select name from payload_migrations order by id")]
        tables = {r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
    committed = sorted(p.stem for p in (EXAMPLE / "src" / "migrations").glob("*.ts") if p.stem != "index")
    assert names == committed
    assert {"users", "posts", "media"} <= tables


def test_liveness(app):
    res = http("GET", f"{app['base']}/api/health")
    assert res.status == 200
    body = res.json()
    assert body["status"] == "ok" and body["version"] == "test-1"
    assert isinstance(body["uptime"], int | float) and body["uptime"] >= 0


def test_readiness(app):
    res = http("GET", f"{app['base']}/api/health/ready")
    assert res.status == 200
    assert res.json()["status"] == "ready"


def test_post_created_through_rest_reads_back(app, token):
    auth = {"Authorization": f"JWT {token}"}
    created = http("POST", f"{app['base']}/api/posts", {"title": "Hello from the test bed"}, headers=auth)
    assert created.status == 201, created.body[:500]
    post_id = created.json()["doc"]["id"]
    read = http("GET", f"{app['base']}/api/posts/{post_id}", headers=auth)
    assert read.status == 200
    assert read.json()["title"] == "Hello from the test bed"


def test_anonymous_write_is_refused(app):
    res = http("POST", f"{app['base']}/api/posts", {"title": "nope"})
    assert res.status in (401, 403)


def test_media_upload_lands_in_media_dir(app, token):
    data = os.urandom(4096)
    body, ctype = multipart({"_payload": '{"alt": "random bytes"}'},
                            {"file": ("blob.bin", data, "application/octet-stream")})
    res = http("POST", f"{app['base']}/api/media", body,
               headers={"Authorization": f"JWT {token}", "Content-Type": ctype})
    assert res.status == 201, res.body[:500]
    doc = res.json()["doc"]
    stored = Path(app["media"]) / doc["filename"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    served = http("GET", f"{app['base']}{doc['url']}", headers={"Authorization": f"JWT {token}"})
    assert served.status == 200 and served.body == data


def test_readiness_follows_the_database_down_and_back(app, db):
    docker("stop", db.name)
    try:
        t0 = time.monotonic()
        res = http("GET", f"{app['base']}/api/health/ready", timeout=10)
        elapsed = time.monotonic() - t0
        assert res.status == 503
        assert res.json()["status"] == "unavailable" and res.json()["reason"]
        assert elapsed < 5, f"readiness took {elapsed:.1f}s to answer with the database down"
        assert http("GET", f"{app['base']}/api/health").status == 200
        assert running(app["name"]), "the app process died when the database went away"
    finally:
        docker("start", db.name)
    db.wait_ready()
    wait_until(lambda: http("GET", f"{app['base']}/api/health/ready", timeout=5).status == 200, 30,
               "readiness to recover after the database came back")
    assert running(app["name"])


def test_readiness_fails_while_a_table_the_app_needs_is_missing(app, db):
    """A database without the app's schema (an app whose migrations never created a table: Payload pushes its
    schema only in development) is not ready, whatever payload_migrations says: no green deploy of a site whose
    pages fail (issue 24)."""
    with db.connect() as conn:
        conn.execute("alter table posts rename to posts_elsewhere")
    try:
        res = http("GET", f"{app['base']}/api/health/ready", timeout=10)
        assert res.status == 503
        assert res.json()["reason"].startswith("the database lacks 1 table(s) the app needs (posts): no migration "
                                               "created them"), res.json()
    finally:
        with db.connect() as conn:
            conn.execute("alter table posts_elsewhere rename to posts")
    assert http("GET", f"{app['base']}/api/health/ready", timeout=10).status == 200
