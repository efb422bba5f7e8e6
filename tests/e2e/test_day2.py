"""Day-2 operations on a deployed VPS: backup and restore round trip, refusal of damaged backups,
retention over a simulated calendar, an update that fails readiness and rolls back by itself, an update
that adds a migration, stop + deploy, logs filters and the health task."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support import free_port, http, multipart, run_pyinfra, wait_until
from tests.testbed.vps import docker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BACKUPS = "/var/backups/example"


pyinfra = run_pyinfra


def backups(vps) -> list[str]:
    out = vps.ssh(f"sudo ls -1 {BACKUPS} 2>/dev/null || true").stdout.split()
    return sorted(n for n in out if n.endswith("Z") and "." not in n)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("operator") / ".env"
    path.write_text("POSTGRES_PASSWORD=day2-password\nPAYLOAD_SECRET=day2-payload-secret-0123456789abcdef\n")
    return path


@pytest.fixture(scope="module")
def site(vps_factory, env_file):
    vps = vps_factory("day2")
    first = pyinfra(vps, env_file, "deploy.py")
    assert first.returncode == 0, first.stdout[-4000:]
    local = free_port()
    state = {"vps": vps, "local": local, "base": f"http://127.0.0.1:{local}", "env_file": env_file}
    state["tunnel"] = vps.forward(3000, local)
    wait_until(lambda: http("GET", f"{state['base']}/api/health/ready", timeout=3).status == 200, 60, "the tunnel")
    creds = {"email": "ops@example.com", "password": "a long enough password"}
    assert http("POST", f"{state['base']}/api/users/first-register", creds).status in (200, 201)
    state["creds"] = creds
    yield state
    state["tunnel"].terminate()


def reopen(site, timeout: float = 180) -> None:
    site["tunnel"].terminate()
    site["tunnel"].wait(timeout=10)
    site["tunnel"] = site["vps"].forward(3000, site["local"])
    wait_until(lambda: http("GET", f"{site['base']}/api/health/ready", timeout=3).status == 200, timeout,
               "the app to answer ready")


def auth(site) -> dict:
    token = http("POST", f"{site['base']}/api/users/login", site["creds"]).json()["token"]
    return {"Authorization": f"JWT {token}"}


def snapshot(site) -> dict:
    """What a user would compare: post titles and each media file's checksum."""
    a = auth(site)
    posts = sorted(d["title"] for d in http("GET", f"{site['base']}/api/posts?limit=100", headers=a).json()["docs"])
    media = {}
    for doc in http("GET", f"{site['base']}/api/media?limit=100", headers=a).json()["docs"]:
        body = http("GET", f"{site['base']}{doc['url']}", headers=a).body
        media[doc["filename"]] = hashlib.sha256(body).hexdigest()
    return {"posts": posts, "media": media}


def add_content(site, n: int) -> None:
    a = auth(site)
    for i in range(n):
        assert http("POST", f"{site['base']}/api/posts", {"title": f"post {i}"}, headers=a).status == 201
        body, ctype = multipart({"_payload": '{"alt": "x"}'},
                                {"file": (f"file{i}.bin", os.urandom(2048 + i), "application/octet-stream")})
        assert http("POST", f"{site['base']}/api/media", body, headers={**a, "Content-Type": ctype}).status == 201


def test_backup_restore_round_trip(site):
    add_content(site, 3)
    before = snapshot(site)
    assert len(before["posts"]) == 3 and len(before["media"]) == 3
    out = pyinfra(site["vps"], site["env_file"], "tasks/backup.py")
    assert out.returncode == 0, out.stdout[-3000:]
    name = backups(site["vps"])[-1]
    listing = site["vps"].ssh(f"sudo ls {BACKUPS}/{name}").stdout.split()
    assert sorted(listing) == ["SHA256SUMS", "db.dump", "manifest.json", "media.tar"]
    assert '"postgres_version": "17.' in site["vps"].ssh(f"sudo cat {BACKUPS}/{name}/manifest.json").stdout

    a = auth(site)
    for doc in http("GET", f"{site['base']}/api/posts?limit=100", headers=a).json()["docs"][:2]:
        assert http("DELETE", f"{site['base']}/api/posts/{doc['id']}", headers=a).status == 200
    doc = http("GET", f"{site['base']}/api/media?limit=1", headers=a).json()["docs"][0]
    assert http("DELETE", f"{site['base']}/api/media/{doc['id']}", headers=a).status == 200
    assert snapshot(site) != before

    out = pyinfra(site["vps"], site["env_file"], "tasks/restore.py", "--data", f"backup={name}")
    assert out.returncode == 0, out.stdout[-3000:]
    reopen(site)
    assert snapshot(site) == before
    assert len(backups(site["vps"])) == 2  # the safety backup taken before the restore


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_backup_is_refused_and_nothing_changes(site, damage):
    name = backups(site["vps"])[0]
    bad = f"{BACKUPS}/{name}"
    if damage == "truncate":
        site["vps"].ssh(f"sudo sh -c 'truncate -s $(( $(stat -c %s {bad}/db.dump) / 2 )) {bad}/db.dump'")
    else:
        site["vps"].ssh(f"sudo sh -c 'printf \"\\\\377\" | dd of={bad}/media.tar bs=1 seek=700 conv=notrunc'")
    before = snapshot(site)
    count = len(backups(site["vps"]))
    out = pyinfra(site["vps"], site["env_file"], "tasks/restore.py", "--data", f"backup={name}")
    assert out.returncode != 0
    assert f"backup {name} is corrupt (checksum mismatch): nothing was changed" in out.stdout
    assert snapshot(site) == before
    assert len(backups(site["vps"])) == count  # refused before even the safety backup
    site["vps"].ssh(f"sudo rm -rf {bad}")


@pytest.mark.parametrize("value", ["../../etc", "latest/../x", "20261128T000000Z; rm -rf /"])
def test_backup_name_that_is_not_a_backup_is_refused(site, value):
    out = pyinfra(site["vps"], site["env_file"], "tasks/restore.py", "--data", f"backup={value}")
    assert out.returncode != 0
    assert "is not a backup name" in out.stdout


def expected_retention(days: list[dt.date], daily=7, weekly=4, monthly=6) -> set[dt.date]:
    keep, seen_d, seen_w, seen_m = {days[-1]}, set(), set(), set()
    for d in sorted(days, reverse=True):
        w, m = d.isocalendar()[:2], (d.year, d.month)
        if d not in seen_d and len(seen_d) < daily:
            seen_d.add(d)
            keep.add(d)
        if w not in seen_w and len(seen_w) < weekly:
            seen_w.add(w)
            keep.add(d)
        if m not in seen_m and len(seen_m) < monthly:
            seen_m.add(m)
            keep.add(d)
    return keep


def test_retention_over_a_simulated_calendar(site):
    """100 daily backups (the last one real): exactly the GFS set survives, and a second prune keeps it."""
    vps = site["vps"]
    vps.ssh(f"sudo sh -c 'rm -rf {BACKUPS}/*'")
    start = dt.date(2026, 1, 1)
    days = [start + dt.timedelta(days=i) for i in range(100)]
    fake = " ".join(f"{BACKUPS}/{d:%Y%m%d}T031500Z" for d in days[:-1])
    vps.ssh(f"sudo mkdir -p {fake}")
    last = f"{days[-1]:%Y%m%d}T031500Z"
    vps.ssh(f"cd /opt/example && sudo env VPSKIT_BACKUP_TIME={last} bin/backup.sh /opt/example {BACKUPS} 7 4 6")
    survivors = backups(vps)
    assert survivors == sorted(f"{d:%Y%m%d}T031500Z" for d in expected_retention(days))
    assert len(survivors) == len(set(survivors)) and last in survivors


def build_image(tag: str, dockerfile: str) -> None:
    out = subprocess.run(["docker", "build", "-t", tag, "-"], input=dockerfile, text=True, capture_output=True,
                         env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert out.returncode == 0, out.stderr[-2000:]


def current_version(site) -> str:
    return site["vps"].ssh("cat /opt/example/current").stdout.strip()


def test_update_to_a_version_that_never_gets_ready_rolls_back(site):
    good = current_version(site)
    before = snapshot(site)
    bad = "bad-ready"
    # The same app, but the server never starts listening: readiness can only fail.
    build_image(f"example:{bad}", f"FROM example:{good}\nCMD [\"node\", \"-e\", \"setInterval(() => {{}}, 1000)\"]\n")
    seen, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            t = time.monotonic()
            try:
                ok = http("GET", f"{site['base']}/api/health", timeout=1).status == 200
            except OSError:
                ok = False
            seen.append((t, ok))
            time.sleep(0.5)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        out = pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", f"app_version={bad}",
                      "--data", "health_timeout=30")
    finally:
        stop.set()
        thread.join(timeout=5)
        docker("rmi", "-f", f"example:{bad}", check=False)
    assert out.returncode != 0
    assert f"version {bad} failed its readiness check; rolled back to {good}, which is healthy" in out.stdout
    reopen(site)
    assert http("GET", f"{site['base']}/api/health").json()["version"] == good
    assert snapshot(site) == before
    down = sum(0.5 for _, ok in seen if not ok)
    print(f"\nupdate with rollback: probe saw no answer for about {down:.1f}s of {len(seen) * 0.5:.0f}s")


MIGRATION = """import { MigrateUpArgs, MigrateDownArgs, sql } from '@payloadcms/db-postgres'

export async function up({ db }: MigrateUpArgs): Promise<void> {
  await db.execute(sql`ALTER TABLE "posts" ADD COLUMN IF NOT EXISTS "subtitle" varchar`)
}

export async function down({ db }: MigrateDownArgs): Promise<void> {
  await db.execute(sql`ALTER TABLE "posts" DROP COLUMN IF EXISTS "subtitle"`)
}
"""


def test_update_that_adds_a_migration_keeps_the_data(site, tmp_path):
    app = tmp_path / "app"
    shutil.copytree(ROOT / "example", app, ignore=shutil.ignore_patterns("node_modules", ".next", "media"))
    migrations = app / "src" / "migrations"
    (migrations / "20261201_000000_add_subtitle.ts").write_text(MIGRATION)
    index = (migrations / "index.ts").read_text()
    index = "import * as m_add_subtitle from './20261201_000000_add_subtitle'\n" + index.replace(
        "\n]", "\n  { up: m_add_subtitle.up, down: m_add_subtitle.down, name: '20261201_000000_add_subtitle' },\n]")
    (migrations / "index.ts").write_text(index)
    before = snapshot(site)
    out = pyinfra(site["vps"], site["env_file"], "tasks/update.py", "--data", f"app_path={app}",
                  "--data", "app_version=with-subtitle")
    assert out.returncode == 0, out.stdout[-4000:]
    reopen(site)
    assert http("GET", f"{site['base']}/api/health").json()["version"] == "with-subtitle"
    assert snapshot(site) == before
    cols = site["vps"].ssh("cd /opt/example && sudo docker compose exec -T db psql -U payload -d payload -Atc "
                           "\"select column_name from information_schema.columns where table_name='posts'\"").stdout
    assert "subtitle" in cols.split()
    applied = site["vps"].ssh("cd /opt/example && sudo docker compose exec -T db psql -U payload -d payload -Atc "
                              "'select name from payload_migrations order by id'").stdout.split()
    assert applied[-1] == "20261201_000000_add_subtitle"
    assert len(backups(site["vps"])) >= 2  # the backup taken before the update


def test_rollback_task_goes_back_to_the_previous_release(site):
    before = snapshot(site)
    out = pyinfra(site["vps"], site["env_file"], "tasks/rollback.py")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "rolled back from with-subtitle to" in out.stdout
    reopen(site)
    assert http("GET", f"{site['base']}/api/health").json()["version"] != "with-subtitle"
    assert snapshot(site) == before


def test_stop_then_deploy_keeps_the_data(site):
    before = snapshot(site)
    out = pyinfra(site["vps"], site["env_file"], "tasks/stop.py")
    assert out.returncode == 0, out.stdout[-2000:]
    states = site["vps"].ssh("cd /opt/example && sudo docker compose ps -a --format '{{.State}}'").stdout.split()
    assert states and set(states) == {"exited"}
    assert "example_db-data" in site["vps"].ssh("sudo docker volume ls -q").stdout
    out = pyinfra(site["vps"], site["env_file"], "deploy.py")
    assert out.returncode == 0, out.stdout[-3000:]
    reopen(site)
    assert snapshot(site) == before


def test_purge_needs_the_app_name(site):
    out = pyinfra(site["vps"], site["env_file"], "tasks/stop.py", "--data", "purge=yes")
    assert out.returncode != 0
    assert "purge='yes' does not name this app: to delete its volumes for good, use --data purge=example" in out.stdout
    assert "example_db-data" in site["vps"].ssh("sudo docker volume ls -q").stdout


def test_backup_list_and_download(site):
    listed = pyinfra(site["vps"], site["env_file"], "tasks/backup.py", "--data", "list=true")
    assert listed.returncode == 0
    names = backups(site["vps"])
    assert all(n in listed.stdout for n in names) and "postgres 17." in listed.stdout
    got = pyinfra(site["vps"], site["env_file"], "tasks/backup.py", "--data", "download=true")
    assert got.returncode == 0, got.stdout[-2000:]
    newest = backups(site["vps"])[-1]
    local = ROOT / "backups" / "example" / newest
    try:
        assert sorted(p.name for p in local.iterdir()) == ["SHA256SUMS", "db.dump", "manifest.json", "media.tar"]
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=local, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        shutil.rmtree(ROOT / "backups", ignore_errors=True)


def test_logs_filters(site):
    out = pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "service=db", "--data", "lines=50",
                  "--data", "grep=database system is ready")
    assert out.returncode == 0, out.stdout[-2000:]
    lines = [ln for ln in out.stdout.splitlines() if "database system is ready" in ln]
    assert lines and all("db-1" in ln for ln in lines)
    app_only = pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "service=app", "--data",
                       "since=1h", "--data", "grep=database system is ready")
    assert not [ln for ln in app_only.stdout.splitlines() if "database system is ready" in ln]
    bad = pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "service=web")
    assert bad.returncode != 0 and "service='web' is not a service of the stack: use app or db" in bad.stdout


def test_health_passes_then_names_the_database_when_it_is_down(site):
    pyinfra(site["vps"], site["env_file"], "tasks/backup.py")
    ok = pyinfra(site["vps"], site["env_file"], "tasks/health.py")
    assert ok.returncode == 0, ok.stdout[-3000:]
    for check in ("app: running healthy", "db: running healthy", "/api/health: 200", "/api/health/ready: 200",
                  "disk:", "memory:", "backup: last"):
        assert check in ok.stdout
    site["vps"].ssh("cd /opt/example && sudo docker compose stop db")
    try:
        bad = pyinfra(site["vps"], site["env_file"], "tasks/health.py")
        assert bad.returncode != 0
        assert "FAIL db: container exited" in bad.stdout
        assert "unhealthy: db" in bad.stdout
    finally:
        site["vps"].ssh("cd /opt/example && sudo docker compose start db")


def test_firewall_opt_in_keeps_ssh_and_the_site(site):
    out = pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", "firewall=true")
    assert out.returncode == 0, out.stdout[-3000:]
    status = site["vps"].ssh("sudo ufw status").stdout
    assert "Status: active" in status
    assert {"22/tcp", "80/tcp", "443/tcp"} <= {ln.split()[0] for ln in status.splitlines() if " ALLOW " in ln}
    again = pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", "firewall=true")  # SSH still gets in
    assert again.returncode == 0 and "Firewall: SSH, HTTP and HTTPS only" in again.stdout
    reopen(site)
