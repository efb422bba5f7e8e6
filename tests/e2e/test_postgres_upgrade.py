"""PostgreSQL major upgrades (issue 26) on one VPS whose site runs on PostgreSQL 15 (the test bed's stand-in from
Debian 12) with posts and media: a deploy that names 17 is refused before anything changes; an upgrade whose
restore fails leaves 15 serving; the upgrade to 17 under a visitor shows the maintenance page for the window and
nothing else, and keeps every post, media file, migration, extension and role; rollback=true returns to 15 with
the data as it was; after another upgrade, drop_old=true removes the old data; 17 to 18 moves the data where
18 keeps it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

import pytest

from tests.support import Traffic, free_port, http, multipart, run_pyinfra, wait_until
from tests.testbed.vps import docker

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

APP_DIR = "/opt/example"
CREDS = {"email": "ops@example.com", "password": "a long enough password"}
# No timer fires during the module.
ENV = {"VPSKIT_BACKUP_SCHEDULE": "", "VPSKIT_DRILL_SCHEDULE": "", "VPSKIT_HEALTH_SCHEDULE": ""}
BROKEN = "postgres:17-broken-restore"


@pytest.fixture(scope="module")
def site(vps_factory, tmp_path_factory, testbed):
    vps = vps_factory("pgup", docker_ready=True)
    env_file = tmp_path_factory.mktemp("operator") / ".env"
    env_file.write_text("POSTGRES_PASSWORD=pgup-password\nPAYLOAD_SECRET=pgup-payload-secret-0123456789abcdef\n")
    first = run_pyinfra(vps, env_file, "deploy.py", "--data", "postgres_image=postgres:15", env=ENV)
    assert first.returncode == 0, first.stdout[-4000:]
    local = free_port()
    state = {"vps": vps, "env_file": env_file, "local": local, "base": f"http://127.0.0.1:{local}"}
    state["tunnel"] = vps.forward(3000, local)
    wait_until(lambda: http("GET", f"{state['base']}/api/health/ready", timeout=3).status == 200, 60, "the tunnel")
    assert http("POST", f"{state['base']}/api/users/first-register", CREDS).status in (200, 201)
    for i in range(3):
        add(state, f"post {i}", f"file{i}.bin")
    # A 17 whose pg_restore fails: an upgrade that breaks mid-way.
    built = subprocess.run(["docker", "build", "--label", f"vpskit.testbed.session={testbed}", "-t", BROKEN, "-"],
                           input="FROM postgres:17\nRUN ln -sf /bin/false /usr/lib/postgresql/17/bin/pg_restore\n",
                           text=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=300)
    assert built.returncode == 0, built.stderr
    yield state
    state["tunnel"].terminate()
    docker("rmi", "-f", BROKEN, check=False)


def auth(site) -> dict:
    token = http("POST", site["base"] + "/api/users/login", CREDS).json()["token"]
    return {"Authorization": f"JWT {token}"}


def add(site, title: str, filename: str) -> None:
    a = auth(site)
    assert http("POST", f"{site['base']}/api/posts", {"title": title}, headers=a).status == 201
    body, ctype = multipart({"_payload": '{"alt": "x"}'},
                            {"file": (filename, os.urandom(4096), "application/octet-stream")})
    assert http("POST", f"{site['base']}/api/media", body, headers={**a, "Content-Type": ctype}).status == 201


def content(site) -> dict:
    """What a user would compare: post titles (but the visitor's own, tests.support.Traffic's), each media file's
    checksum, the migrations recorded."""
    a = auth(site)
    posts = sorted(d["title"] for d in http("GET", f"{site['base']}/api/posts?limit=200", headers=a).json()["docs"]
                   if not d["title"].startswith("traffic "))
    media = {d["filename"]: hashlib.sha256(http("GET", f"{site['base']}{d['url']}", headers=a).body).hexdigest()
             for d in http("GET", f"{site['base']}/api/media?limit=100", headers=a).json()["docs"]}
    migrations = sh(site, f"cd {APP_DIR} && docker compose exec -T db psql -XAt -U payload -d payload "  # noqa: S608
                          "-c 'select name from payload_migrations order by id'")
    return {"posts": posts, "media": media, "migrations": migrations}


def sh(site, command: str, check: bool = True) -> str:
    return site["vps"].exec("sh", "-c", command, check=check).stdout.strip()


def db_major(site) -> str:
    """The db container's image and the major of the data it serves."""
    image = sh(site, f"cd {APP_DIR} && docker inspect -f '{{{{.Config.Image}}}}' $(docker compose ps -q db)")
    version = sh(site, f"cd {APP_DIR} && docker compose exec -T db psql -XAt -U payload -d payload "
                       "-c 'show server_version'")
    return f"{image} {version.split('.')[0]}"


def task(site, *args: str) -> subprocess.CompletedProcess:
    """A task with postgres_image = postgres:17 set, as the operator has it once the deploy was refused."""
    return run_pyinfra(site["vps"], site["env_file"], *args, "--data", "postgres_image=postgres:17", env=ENV,
                       timeout=900)


def volumes(site) -> list[str]:
    return sorted(sh(site, "docker volume ls -q | grep '^example_db-data' || true").split())


def test_a_deploy_that_names_another_major_is_refused_before_anything_changes(site):
    files = sh(site, f"sha256sum {APP_DIR}/docker-compose.yml {APP_DIR}/.env")
    out = run_pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", "postgres_image=postgres:17", env=ENV)
    assert out.returncode != 0
    assert ("postgres_image postgres:17 is PostgreSQL 17, but the database on the server holds PostgreSQL 15 data, "
            "which 17 cannot open (the site would stay down)") in out.stdout, out.stdout[-3000:]
    assert "tasks/upgrade_postgres.py" in out.stdout
    assert sh(site, f"sha256sum {APP_DIR}/docker-compose.yml {APP_DIR}/.env") == files
    assert db_major(site) == "postgres:15 15"


def test_an_upgrade_whose_restore_fails_leaves_15_serving(site):
    before = content(site)
    out = task(site, "tasks/upgrade_postgres.py", "--data", f"to={BROKEN}")
    assert out.returncode != 0
    assert "restoring the database into PostgreSQL 17 failed (above): the old database is unchanged and serves the " \
           "app" in out.stdout, out.stdout[-3000:]
    wait_until(lambda: http("GET", f"{site['base']}/api/health/ready", timeout=3).status == 200, 60, "the site")
    assert db_major(site) == "postgres:15 15" and content(site) == before
    assert volumes(site) == ["example_db-data"]  # the new server's volume went
    assert http("GET", f"{site['base']}/", timeout=5).status == 200  # open again


PSQL = f"cd {APP_DIR} && docker compose exec -T db psql -XAt -v ON_ERROR_STOP=1 -U payload -d payload -c "


def test_the_upgrade_shows_the_maintenance_page_for_its_window_and_keeps_everything(site):
    # What an operator may have added by hand: an extension, and a role of their own that reads the posts.
    sh(site, PSQL + "'create extension if not exists pg_trgm'")
    sh(site, PSQL + "\"create role reporting login password 'report-pw'\"")
    sh(site, PSQL + "'grant select on posts to reporting'")
    before = content(site)
    start = time.monotonic()
    with Traffic(site["base"], auth(site)["Authorization"].split()[1], path="/") as visitor:
        out = task(site, "tasks/upgrade_postgres.py")
    took = time.monotonic() - start
    assert out.returncode == 0, out.stdout[-4000:]
    page = [e for e in visitor.get_errors if e.startswith("GET 503: b'<!doctype html>")]
    window = len(page) / 25
    print(f"\nupgrade 15 -> 17: {took:.0f}s in all; the visitor saw the maintenance page for about {window:.1f}s "
          f"({visitor.summary()})\n" + "\n".join(ln for ln in out.stdout.splitlines() if "vpskit upgrade:" in ln))
    assert page and len(page) == len(visitor.get_errors), [e for e in visitor.get_errors if e not in page][:5]
    assert "the site was closed for" in out.stdout and "rollback=true" in out.stdout
    assert db_major(site) == "postgres:17 17"
    assert content(site) == before
    assert volumes(site) == ["example_db-data", "example_db-data-15"]
    # The extension and the role came along: the role logs in with its password and reads the posts.
    assert sh(site, PSQL + "\"select extname from pg_extension where extname = 'pg_trgm'\"") == "pg_trgm"  # noqa: S608
    assert sh(site, PSQL + "\"select similarity('payload', 'payloads') > 0.5\"") == "t"
    report = sh(site, f"cd {APP_DIR} && docker compose exec -T db psql -XAt "  # noqa: S608
                      "postgresql://reporting:report-pw@127.0.0.1/payload -c 'select count(*) from posts'")
    assert int(report) >= len(before["posts"]) > 0  # the visitor's own posts besides
    add(site, "written on 17", "on17.bin")
    site["on17"] = content(site)
    # The deploy with postgres_image = postgres:17 is no longer refused.
    again = run_pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", "postgres_image=postgres:17", env=ENV)
    assert again.returncode == 0, again.stdout[-3000:]
    site["before_upgrade"] = before


def test_rollback_returns_to_15_with_the_data_as_it_was(site):
    out = task(site, "tasks/upgrade_postgres.py", "--data", "rollback=true")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "PostgreSQL 15 serves again" in out.stdout
    assert "sudo docker volume rm example_db-data-17 frees it" in out.stdout
    wait_until(lambda: http("GET", f"{site['base']}/api/health/ready", timeout=3).status == 200, 60, "the site")
    assert db_major(site) == "postgres:15 15"
    assert content(site) == site["before_upgrade"]  # what was written on 17 is not in the 15 data
    assert volumes(site) == ["example_db-data", "example_db-data-17"]


def test_drop_old_removes_the_data_an_upgrade_kept(site):
    sh(site, "docker volume rm example_db-data-17")  # as the rollback's last line says, to free its space
    out = task(site, "tasks/upgrade_postgres.py")
    assert out.returncode == 0, out.stdout[-3000:]
    assert volumes(site) == ["example_db-data", "example_db-data-15"]
    out = task(site, "tasks/upgrade_postgres.py", "--data", "drop_old=true")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "removed the PostgreSQL 15 data (example_db-data-15" in out.stdout
    assert volumes(site) == ["example_db-data"]
    assert db_major(site) == "postgres:17 17"
    out = task(site, "tasks/upgrade_postgres.py", "--data", "rollback=true")
    assert out.returncode != 0 and "no PostgreSQL upgrade of this app to go back from" in out.stdout


def test_an_upgrade_to_18_moves_the_data_where_18_keeps_it(site):
    """From 18 the official image keeps its data in /var/lib/postgresql/18/docker under a volume at
    /var/lib/postgresql, and refuses a volume at the old place (the test bed's 18 does the same)."""
    before = content(site)
    out = run_pyinfra(site["vps"], site["env_file"], "tasks/upgrade_postgres.py", "--data",
                      "postgres_image=postgres:18", env=ENV, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:]
    print("\nupgrade 17 -> 18:\n" + "\n".join(ln for ln in out.stdout.splitlines() if "vpskit upgrade:" in ln))
    assert db_major(site) == "postgres:18 18"
    assert content(site) == before
    mounts = sh(site, f"grep -E '^      - db-data:' {APP_DIR}/docker-compose.yml")
    assert mounts == "- db-data:/var/lib/postgresql", mounts  # one mount, where 18 wants it
    assert sh(site, PSQL + "'show data_directory'") == "/var/lib/postgresql/18/docker"
    assert sh(site, PSQL + "'show data_checksums'") == "on"  # 18's initdb turns them on
    # The deploy with postgres_image = postgres:18 writes the same db service: the database is left running.
    db = sh(site, f"cd {APP_DIR} && docker compose ps -q db")
    again = run_pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", "postgres_image=postgres:18", env=ENV)
    assert again.returncode == 0, again.stdout[-3000:]
    assert sh(site, f"cd {APP_DIR} && docker compose ps -q db") == db
    add(site, "written on 18", "on18.bin")
