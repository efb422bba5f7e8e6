"""Day-2 operations on a deployed VPS: backup and restore round trip, refusal of damaged backups,
retention over a simulated calendar, an update that fails readiness and rolls back by itself, an update
that adds a migration, stop + deploy, logs filters and the health task."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.sites import expected_retention
from tests.support import (
    Traffic,
    free_port,
    http,
    multipart,
    popen_pyinfra,
    run_pyinfra,
    variant_image,
    wait_until,
)
from tests.testbed.vps import docker

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

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
    vps = vps_factory("day2", docker_ready=True)
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
    subprocess.run(["docker", "image", "rm", "-f", "example:with-subtitle"], capture_output=True, timeout=120)


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
    assert sorted(listing) == ["SHA256SUMS", "db.dump", "manifest.json", "media.sha256", "media.tar"]
    assert '"postgres_version": "17.' in site["vps"].ssh(f"sudo cat {BACKUPS}/{name}/manifest.json").stdout

    a = auth(site)
    for doc in http("GET", f"{site['base']}/api/posts?limit=100", headers=a).json()["docs"][:2]:
        assert http("DELETE", f"{site['base']}/api/posts/{doc['id']}", headers=a).status == 200
    doc = http("GET", f"{site['base']}/api/media?limit=1", headers=a).json()["docs"][0]
    assert http("DELETE", f"{site['base']}/api/media/{doc['id']}", headers=a).status == 200
    assert snapshot(site) != before

    # A visitor during the restore (the home page): while the app is stopped for the swap, its proxy answers with
    # the maintenance page (503) instead of a gateway error (issue 26, item 3).
    with Traffic(site["base"], a["Authorization"].split()[1], path="/") as visitor:
        out = pyinfra(site["vps"], site["env_file"], "tasks/restore.py", "--data", f"backup={name}")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "vpskit maintenance: example is closed" in out.stdout and "example is open again" in out.stdout
    page = [e for e in visitor.get_errors if e.startswith("GET 503: b'<!doctype html>")]
    print(f"\nvisitor during the restore: {visitor.summary()}; {len(page)} maintenance pages")
    assert page and len(page) == len(visitor.get_errors), [e for e in visitor.get_errors if e not in page][:5]
    reopen(site)
    for post in visitor.acknowledged:  # the visitor's own writes made after the restore opened the site again
        http("DELETE", f"{site['base']}/api/posts/{post}", headers=auth(site))
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




def test_retention_over_a_simulated_calendar(site):
    """100 daily backups (the last one real): exactly the GFS set survives; a real backup on the next day
    prunes again, and what survives is the GFS set of the 101 days."""
    vps = site["vps"]
    vps.ssh(f"sudo sh -c 'rm -rf {BACKUPS}/*'")
    start = dt.date(2026, 1, 1)
    days = [start + dt.timedelta(days=i) for i in range(100)]
    fake = " ".join(f"{BACKUPS}/{d:%Y%m%d}T031500Z" for d in days[:-1])
    vps.ssh(f"sudo mkdir -p {fake}")
    last = f"{days[-1]:%Y%m%d}T031500Z"
    vps.ssh(f"cd /opt/example && sudo env VPSKIT_BACKUP_TIME={last} bin/vpskit-server backup --app-dir /opt/example "
            f"--backups {BACKUPS} --keep 7 4 6")
    survivors = backups(vps)
    assert survivors == sorted(f"{d:%Y%m%d}T031500Z" for d in expected_retention(days))
    assert len(survivors) == len(set(survivors)) and last in survivors
    days.append(days[-1] + dt.timedelta(days=1))
    nxt = f"{days[-1]:%Y%m%d}T031500Z"
    vps.ssh(f"cd /opt/example && sudo env VPSKIT_BACKUP_TIME={nxt} bin/vpskit-server backup --app-dir /opt/example "
            f"--backups {BACKUPS} --keep 7 4 6")
    again = backups(vps)
    assert again == sorted(f"{d:%Y%m%d}T031500Z" for d in expected_retention(days))
    assert set(survivors) - set(again)  # the second prune removed something: the window moved by a day


def server_images(site) -> set[str]:
    out = site["vps"].ssh("sudo docker image ls --format '{{.Repository}}:{{.Tag}}' example").stdout
    return set(out.split())


def current_version(site) -> str:
    """The version of the release serving (releases are kept by number: releases/index, current)."""
    return site["vps"].ssh("cd /opt/example && awk -F'\\t' -v n=\"$(cat current)\" '$1 == n {print $2}' "
                           "releases/index").stdout.strip()


def test_update_to_a_version_that_never_gets_ready_rolls_back(site, testbed):
    good = current_version(site)
    before = snapshot(site)
    bad = "bad-ready"
    # The same app, but the server never starts listening: readiness can only fail.
    variant_image(f"example:{good}", f"example:{bad}", testbed, "setInterval(() => {}, 1000)")
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
    # The server never listens: the message says so, from the route's last answer.
    assert (f"did not answer ready within 30s (its ready route: no answer: ECONNREFUSED): version {bad} was not "
            f"released; {good} keeps serving"
            in out.stdout), out.stdout[-3000:]
    assert http("GET", f"{site['base']}/api/health").json()["version"] == good
    assert snapshot(site) == before
    # Start before stop: the version that never gets ready is thrown away while the old one keeps serving.
    assert seen and all(ok for _, ok in seen), [t for t, ok in seen if not ok][:5]
    site["bad"] = bad
    print(f"\nupdate that never gets ready: {len(seen)} probes over {seen[-1][0] - seen[0][0]:.0f}s, none failed")


def failed_update_reported_fast(site, testbed, tag: str, command: str, reason: str, logged: str) -> int:
    """Deploys a stand-in of the running version whose container runs `command`; checks that the wait ends
    within 30 s (health_timeout 300) with `reason` (a regex) and the container's `logged` line under it, and
    that the previous version serves again. Returns the seconds the wait took."""
    good = current_version(site)
    variant_image(f"example:{good}", f"example:{tag}", testbed, command)
    try:
        out = pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", f"app_version={tag}",
                      "--data", "health_timeout=300", "--data", "backup_before_update=false")
    finally:
        docker("rmi", "-f", f"example:{tag}", check=False)
    assert out.returncode != 0
    found = re.search(rf"vpskit release: the new container example-app-\d+ {reason} after (\d+)s: version {tag} "
                      rf"was not released; {good} keeps serving", out.stdout)
    assert found, out.stdout[-3000:]
    assert int(found.group(found.lastindex)) <= 30, found.group(0)
    assert logged in out.stdout.split(found.group(0), 1)[0]  # the container's last lines, above the reason
    assert http("GET", f"{site['base']}/api/health").json()["version"] == good
    return int(found.group(found.lastindex))


def test_new_container_that_exits_at_once_is_reported_within_seconds(site, testbed):
    """No waiting out health_timeout for a container that cannot run: the wait ends on the exit (or the
    restart), names it, shows the container's last log lines, and the previous version serves again."""
    seconds = failed_update_reported_fast(
        site, testbed, "crash-at-once", "console.error('fixture: cannot start, config missing'); process.exit(3)",
        r"(exited with code 3|crashed and was restarted \(\d+ since the wait began\))",
        "fixture: cannot start, config missing")
    print(f"\ncontainer that exits at once: reported after {seconds}s (health_timeout 300)")


def test_new_container_that_keeps_failing_to_reach_its_database_is_reported_within_seconds(site, testbed):
    """An app that stays up but logs a database connection error on every attempt (the wrong URL, say)."""
    seconds = failed_update_reported_fast(
        site, testbed, "db-refused",
        "setInterval(() => console.error('Error: connect ECONNREFUSED 127.0.0.1:5432'), 1000)",
        r"cannot reach its database \(\d+ errors logged\)", "connect ECONNREFUSED 127.0.0.1:5432")
    print(f"\napp that cannot reach its database: reported after {seconds}s (health_timeout 300)")


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
    previous = current_version(site)
    backups_before = backups(site["vps"])
    assert f"example:{site.get('bad', 'bad-ready')}" in server_images(site)  # left by the failed updates
    # Built by this run whatever an earlier one left under that name (an explicit version names no content).
    subprocess.run(["docker", "image", "rm", "-f", "example:with-subtitle"], capture_output=True, timeout=120)
    out = pyinfra(site["vps"], site["env_file"], "tasks/update.py", "--data", f"app_path={app}",
                  "--data", "app_version=with-subtitle")
    assert out.returncode == 0, out.stdout[-4000:]
    # A code change sends only its own layers (static assets and server code); the base image's and the
    # dependencies' layers are on the server already (the transfer's own count).
    sent = re.search(r"shipped example:with-subtitle: (\d+) layer\(s\) sent, (\d+) already on the server, "
                     r"([0-9.]+) MB over SSH", out.stdout)
    assert sent, out.stdout[-4000:]
    assert int(sent.group(1)) <= 3 and int(sent.group(2)) >= 6, sent.group(0)
    print(f"\ncode change (a migration added): {sent.group(0)}")
    site["before_subtitle"] = previous
    reopen(site)
    assert http("GET", f"{site['base']}/api/health").json()["version"] == "with-subtitle"
    assert snapshot(site) == before
    cols = site["vps"].ssh("cd /opt/example && sudo docker compose exec -T db psql -U payload -d payload -Atc "
                           "\"select column_name from information_schema.columns where table_name='posts'\"").stdout
    assert "subtitle" in cols.split()
    applied = site["vps"].ssh("cd /opt/example && sudo docker compose exec -T db psql -U payload -d payload -Atc "
                              "'select name from payload_migrations order by id'").stdout.split()
    assert applied[-1] == "20261201_000000_add_subtitle"
    # Exactly one backup was taken before the update, of the version that was running then.
    new = sorted(set(backups(site["vps"])) - set(backups_before))
    assert len(new) == 1, new
    manifest = json.loads(site["vps"].ssh(f"sudo cat {BACKUPS}/{new[0]}/manifest.json").stdout)
    assert manifest["app_version"] == previous
    # The failed version's image went with the next successful release; the kept releases' stayed.
    images = server_images(site)
    assert "example:bad-ready" not in images
    assert {f"example:{previous}", "example:with-subtitle"} <= images


def test_rollback_task_goes_back_to_the_previous_release(site):
    before = snapshot(site)
    out = pyinfra(site["vps"], site["env_file"], "tasks/rollback.py")
    assert out.returncode == 0, out.stdout[-3000:]
    previous = site["before_subtitle"]
    assert f"rolled back from with-subtitle to {previous}" in out.stdout
    reopen(site)
    assert http("GET", f"{site['base']}/api/health").json()["version"] == previous
    assert current_version(site) == previous
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
        assert sorted(p.name for p in local.iterdir()) == ["SHA256SUMS", "db.dump", "manifest.json", "media.sha256",
                                                           "media.tar"]
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=local, capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        shutil.rmtree(ROOT / "backups", ignore_errors=True)


def log_lines(out: str, service: str) -> list[str]:
    return [ln for ln in out.splitlines() if f"{service}-1 " in ln and " | " in ln]


def test_logs_filters(site):
    out = pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "service=db", "--data", "lines=50",
                  "--data", "grep=database system is ready")
    assert out.returncode == 0, out.stdout[-2000:]
    lines = [ln for ln in out.stdout.splitlines() if "database system is ready" in ln]
    assert lines and all("db-1" in ln for ln in lines)
    app_only = pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "service=app", "--data",
                       "since=1h", "--data", "grep=database system is ready")
    assert app_only.returncode == 0, app_only.stdout[-2000:]
    assert not [ln for ln in app_only.stdout.splitlines() if "database system is ready" in ln]
    bad = pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "service=web")
    assert bad.returncode != 0 and "service='web' is not a service of the stack: use app or db" in bad.stdout


def test_logs_follow_streams_until_stopped(site):
    """follow=true keeps printing as the app logs, until interrupted (here: after the first db line)."""
    proc = popen_pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "follow=true",
                         "--data", "service=db", "--data", "lines=5")
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("db-1" in ln and " | " in ln for ln in seen), 60, "the first streamed log line")
        time.sleep(2)  # still streaming afterwards: the command did not end after printing
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=10)


def test_logs_lines_and_since(site):
    """lines=N shows the last N lines of each service; since= drops what was logged before."""
    few = pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "service=db", "--data", "lines=3")
    assert few.returncode == 0, few.stdout[-2000:]
    many = pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "service=db", "--data", "lines=500")
    assert len(log_lines(few.stdout, "db")) == 3 < len(log_lines(many.stdout, "db"))
    now = site["vps"].ssh("date -u +%Y-%m-%dT%H:%M:%SZ").stdout.strip()
    later = pyinfra(site["vps"], site["env_file"], "tasks/logs.py", "--data", "service=db", "--data", f"since={now}",
                    "--data", "grep=database system is ready")
    assert later.returncode == 0, later.stdout[-2000:]
    assert not [ln for ln in later.stdout.splitlines() if "database system is ready" in ln]


def test_health_passes_then_names_the_database_when_it_is_down(site):
    backup = pyinfra(site["vps"], site["env_file"], "tasks/backup.py")
    assert backup.returncode == 0, backup.stdout[-2000:]
    ok = pyinfra(site["vps"], site["env_file"], "tasks/health.py")
    assert ok.returncode == 0, ok.stdout[-3000:]
    for check in ("app: running healthy", "db: running healthy", "proxy: running", "/api/health: 200",
                  "/api/health/ready: 200",
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


def psql(site, sql: str) -> str:
    return site["vps"].ssh("cd /opt/example && sudo docker compose exec -T db psql -v ON_ERROR_STOP=1 -U payload "
                           f"-d payload -Atc {shlex.quote(sql)}").stdout


def databases(site) -> set[str]:
    return set(psql(site, "select datname from pg_database").split())


def leftovers_in_backups(site) -> list[str]:
    return [n for n in site["vps"].ssh(f"sudo ls -1A {BACKUPS}").stdout.split() if n.endswith(".partial")]


def test_backup_whose_verification_fails_leaves_nothing_behind(site):
    """pg_restore --list failing (here: made unrunnable in the db container) ends the backup with its reason;
    no .partial folder and no new backup remain."""
    before = backups(site["vps"])
    pg_restore = "/usr/lib/postgresql/17/bin/pg_restore"
    site["vps"].ssh(f"sudo docker exec -u 0 example-db-1 chmod 000 {pg_restore}")
    try:
        out = pyinfra(site["vps"], site["env_file"], "tasks/backup.py")
    finally:
        site["vps"].ssh(f"sudo docker exec -u 0 example-db-1 chmod 755 {pg_restore}")
    assert out.returncode != 0
    assert "the dump did not pass pg_restore --list: nothing kept" in out.stdout
    assert backups(site["vps"]) == before
    assert leftovers_in_backups(site) == []


def test_backup_whose_media_archive_fails_keeps_nothing(site):
    """A failing step after the dump (here: `docker run`, which writes the media archive, refused by a stand-in
    first on PATH that passes every other docker command through) stops the backup with one line, keeps no
    partial folder and no manifest."""
    before = backups(site["vps"])
    stand_in = '#!/bin/sh\n[ "$1" = run ] && { echo "docker run: simulated" >&2; exit 1; }\nexec /usr/bin/docker "$@"\n'
    site["vps"].ssh(f"sudo sh -c 'mkdir -p /tmp/failing-run && echo {base64.b64encode(stand_in.encode()).decode()} "
                    "| base64 -d > /tmp/failing-run/docker && chmod 755 /tmp/failing-run/docker'")
    out = site["vps"].ssh(f"cd /opt/example && sudo env PATH=/tmp/failing-run:$PATH bin/vpskit-server backup "
                          f"--app-dir /opt/example --backups {BACKUPS} --keep 7 4 6", check=False)
    site["vps"].ssh("sudo rm -rf /tmp/failing-run")
    assert out.returncode != 0
    assert "vpskit backup: writing the media archive failed (above): nothing kept" in out.stderr, out.stderr
    assert backups(site["vps"]) == before
    assert leftovers_in_backups(site) == []
    for name in before:  # every manifest there is valid JSON with numeric sizes (retention's stand-ins have none)
        text = site["vps"].ssh(f"sudo cat {BACKUPS}/{name}/manifest.json", check=False).stdout
        if text:
            manifest = json.loads(text)
            assert isinstance(manifest["db_dump_bytes"], int) and isinstance(manifest["media_tar_bytes"], int)


def test_health_check_of_a_stack_without_services_fails(site):
    """No service is not healthy: the health check of a project whose services are all switched off."""
    site["vps"].ssh("sudo sh -c 'mkdir -p /opt/emptytest && printf \"name: emptytest\\nservices:\\n  x:\\n"
                    "    image: postgres:17\\n    profiles: [never]\\n\" > /opt/emptytest/docker-compose.yml'")
    try:
        out = site["vps"].ssh(f"sudo /opt/example/bin/vpskit-server health --app-dir /opt/emptytest "
                              f"--backups {BACKUPS} --port 3000", check=False)
    finally:
        site["vps"].ssh("sudo rm -rf /opt/emptytest")
    assert out.returncode == 1
    assert "FAIL stack: no services" in out.stdout
    assert "unhealthy: stack" in out.stdout


def test_daily_timer_runs_the_backup_service(site):
    vps = site["vps"]
    assert vps.ssh("systemctl is-active vpskit-backup-example.timer", check=False).stdout.strip() == "active"
    before = backups(vps)
    vps.ssh("sudo systemctl start vpskit-backup-example.service", timeout=300)  # what the timer starts
    assert vps.ssh("systemctl show -p Result --value vpskit-backup-example.service").stdout.strip() == "success"
    assert len(set(backups(vps)) - set(before)) == 1


def test_empty_backup_schedule_turns_the_timer_off(site):
    out = pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", "backup_schedule=")
    assert out.returncode == 0, out.stdout[-3000:]
    timer = "vpskit-backup-example.timer"
    assert site["vps"].ssh(f"systemctl is-enabled {timer}", check=False).stdout.strip() != "enabled"
    assert site["vps"].ssh(f"systemctl is-active {timer}", check=False).stdout.strip() == "inactive"
    back = pyinfra(site["vps"], site["env_file"], "deploy.py")
    assert back.returncode == 0, back.stdout[-3000:]
    assert site["vps"].ssh(f"systemctl is-enabled {timer}", check=False).stdout.strip() == "enabled"
    assert site["vps"].ssh(f"systemctl is-active {timer}", check=False).stdout.strip() == "active"


def test_restore_whose_scratch_restore_fails_changes_nothing(site):
    """A dump that verifies but cannot be restored (it grants rights to a role that no longer exists): the
    live database and media stay as they were, and the scratch database is gone."""
    psql(site, "CREATE ROLE ghost; GRANT SELECT ON posts TO ghost")
    out = pyinfra(site["vps"], site["env_file"], "tasks/backup.py")
    assert out.returncode == 0, out.stdout[-2000:]
    name = backups(site["vps"])[-1]
    psql(site, "REVOKE SELECT ON posts FROM ghost; DROP ROLE ghost")
    before = snapshot(site)
    out = pyinfra(site["vps"], site["env_file"], "tasks/restore.py", "--data", f"backup={name}")
    assert out.returncode != 0
    assert "pg_restore into the scratch database failed: the live database is unchanged" in out.stdout
    assert 'role "ghost" does not exist' in out.stdout
    assert snapshot(site) == before
    assert "payload_restore" not in databases(site)
    site["vps"].ssh(f"sudo rm -rf {BACKUPS}/{name}")


def test_restore_of_data_the_app_cannot_start_on_keeps_the_previous_database(site):
    """A backup the app cannot boot on (its migration records are gone, so Payload re-runs the first migration
    and exits): the restore fails naming the kept database, and restoring the safety backup brings the
    site back as it was."""
    before = snapshot(site)
    psql(site, "CREATE TABLE pm_saved AS SELECT * FROM payload_migrations; DELETE FROM payload_migrations")
    try:
        out = pyinfra(site["vps"], site["env_file"], "tasks/backup.py")
        assert out.returncode == 0, out.stdout[-2000:]
    finally:
        psql(site, "INSERT INTO payload_migrations SELECT * FROM pm_saved; DROP TABLE pm_saved")
    bad = backups(site["vps"])[-1]
    out = pyinfra(site["vps"], site["env_file"], "tasks/restore.py", "--data", f"backup={bad}",
                  "--data", "health_timeout=30")
    assert out.returncode != 0
    assert ("the app did not become ready on the restored data; the previous database is kept as "
            "payload_before_restore") in out.stdout
    assert "payload_before_restore" in databases(site)
    safety = backups(site["vps"])[-1]
    assert safety != bad
    out = pyinfra(site["vps"], site["env_file"], "tasks/restore.py", "--data", f"backup={safety}")
    assert out.returncode == 0, out.stdout[-3000:]
    reopen(site)
    assert snapshot(site) == before
    assert "payload_before_restore" not in databases(site)
    site["vps"].ssh(f"sudo rm -rf {BACKUPS}/{bad}")


def test_backup_and_restore_wait_for_each_others_lock(site):
    """While a backup holds the lock, another backup and a restore wait for it up to lock_timeout (5 s here),
    saying so, then are refused with the reason; nothing changes."""
    lock = f"{BACKUPS}/.lock"
    site["vps"].exec("sh", "-c", f"flock {lock} sleep 117 >/dev/null 2>&1 < /dev/null &")
    wait_until(lambda: site["vps"].exec("pgrep", "-f", "sleep 117", check=False).returncode == 0, 10, "the holder")
    before, count = snapshot(site), backups(site["vps"])
    try:
        backup = pyinfra(site["vps"], site["env_file"], "tasks/backup.py", "--data", "lock_timeout=5")
        restore = pyinfra(site["vps"], site["env_file"], "tasks/restore.py", "--data", "lock_timeout=5")
    finally:
        site["vps"].exec("pkill", "-f", "sleep 117", check=False)
    message = f"another backup or restore is running (lock {lock}): try again when it ends (waited 5s)"
    for out in (backup, restore):
        assert out.returncode != 0 and message in out.stdout, out.stdout[-2000:]
        assert "waiting for another backup or restore of this app to end" in out.stdout
    assert snapshot(site) == before and backups(site["vps"]) == count


def test_registry_pull_that_fails_is_one_clear_line(site):
    """The default image_transport = "registry": the server pulls; when no registry answers (as here), one line
    names the image and the fix, and the running stack is untouched."""
    ids = site["vps"].ssh("sudo docker ps -q --no-trunc --filter label=com.docker.compose.project=example").stdout
    # The data's major (17) in a tag no registry here has: the deploy's major check lets it through to the pull.
    out = pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", "image_transport=registry",
                  "--data", "postgres_image=postgres:17.99-missing")
    assert out.returncode != 0
    assert ("vpskit: could not pull postgres:17.99-missing on the server (the line above says why): check the image "
            "name and that the server reaches its registry, or set image_transport = \"ssh\"") in out.stdout
    assert site["vps"].ssh("sudo docker ps -q --no-trunc --filter label=com.docker.compose.project=example"
                           ).stdout == ids
    again = pyinfra(site["vps"], site["env_file"], "deploy.py")  # the files of the real settings go back
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Stack up and healthy" in again.stdout


def test_rollback_lists_releases_and_goes_to_a_named_one(site):
    listed = pyinfra(site["vps"], site["env_file"], "tasks/rollback.py", "--data", "list=true")
    assert listed.returncode == 0, listed.stdout[-2000:]
    current = current_version(site)
    assert f"{current} (current)" in listed.stdout
    kept = [line.split("\t")[1] for line in site["vps"].ssh("cat /opt/example/releases/index").stdout.splitlines()]
    others = [v for v in kept if v != current]
    assert others and all(o in listed.stdout for o in others)
    target = others[0]
    out = pyinfra(site["vps"], site["env_file"], "tasks/rollback.py", "--data", f"version={target}")
    assert out.returncode == 0, out.stdout[-3000:]
    assert f"rolled back from {current} to {target}" in out.stdout
    reopen(site)
    assert http("GET", f"{site['base']}/api/health").json()["version"] == target


def test_stop_with_remove_keeps_the_volumes(site):
    before = snapshot(site)
    out = pyinfra(site["vps"], site["env_file"], "tasks/stop.py", "--data", "remove=true")
    assert out.returncode == 0, out.stdout[-2000:]
    assert site["vps"].ssh("sudo docker ps -aq --filter label=com.docker.compose.project=example").stdout == ""
    assert {"example_db-data", "example_media"} <= set(site["vps"].ssh("sudo docker volume ls -q").stdout.split())
    out = pyinfra(site["vps"], site["env_file"], "deploy.py")
    assert out.returncode == 0, out.stdout[-3000:]
    reopen(site)
    assert snapshot(site) == before


def test_purge_deletes_the_volumes(site):
    """Last in this module: it deletes the data for good."""
    out = pyinfra(site["vps"], site["env_file"], "tasks/stop.py", "--data", "purge=example")
    assert out.returncode == 0, out.stdout[-2000:]
    volumes = set(site["vps"].ssh("sudo docker volume ls -q").stdout.split())
    assert not volumes & {"example_db-data", "example_media"}
    assert site["vps"].ssh("sudo docker ps -aq --filter label=com.docker.compose.project=example").stdout == ""
