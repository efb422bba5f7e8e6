"""Releases, rollbacks, restores and settings changes as transactions (issue 22, found by review), on one
deployed VPS: a secret rotated under traffic leaves the database alone; the database password cannot change by
accident and rotates as documented; a rollback keeps today's secrets and goes back to the settings before; a
database that cannot start is started again; a release process killed on the server is recorded as failed; a
restore that fails after the app stopped starts it again on the data it had; a deploy waits for a running backup;
tasks that only read change nothing; a .env that lacks a variable the server has is refused; a postgres_image of
another major than the data is refused."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time

import pytest

from tests.support import Traffic, free_port, http, multipart, popen_pyinfra, run_pyinfra, variant_image, wait_until
from tests.testbed.vps import docker
from vpskit.server.history import LogLine

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

APP_DIR = "/opt/example"
BACKUPS = "/var/backups/example"
CREDS = {"email": "ops@example.com", "password": "a long enough password"}
# No timer fires during the module; ten releases kept, so the rollback cases can walk back through them.
ENV = {"VPSKIT_BACKUP_SCHEDULE": "", "VPSKIT_DRILL_SCHEDULE": "", "VPSKIT_HEALTH_SCHEDULE": "",
       "VPSKIT_KEEP_IMAGES": "10"}
FIGURES: list[str] = []


# The operator's .env as the module's cases leave it (a rotation changes it for the cases after).
NOW = {"POSTGRES_PASSWORD": "tx-password-1", "PAYLOAD_SECRET": "tx-payload-secret-0123456789abcdef01",
       "APP_API_KEY": "key-1", "SITE_MODE": "one", "NOTIFY_URL": "http://127.0.0.1:9/hook"}


def env_text(**values: str | None) -> str:
    """The .env text: NOW, with `values` changed for this once (None: left out)."""
    return "".join(f"{k}={v}\n" for k, v in {**NOW, **values}.items() if v is not None)


@pytest.fixture(scope="module")
def site(vps_factory, tmp_path_factory, example_image):
    vps = vps_factory("tx", docker_ready=True)
    folder = tmp_path_factory.mktemp("operator")
    env_file = folder / ".env"
    env_file.write_text(env_text())
    first = run_pyinfra(vps, env_file, "deploy.py", env=ENV)
    assert first.returncode == 0, first.stdout[-4000:]
    local = free_port()
    state = {"vps": vps, "local": local, "base": f"http://127.0.0.1:{local}", "env_file": env_file,
             "folder": folder, "first": example_image.split(":", 1)[1], "variants": []}
    state["tunnel"] = vps.forward(3000, local)
    wait_until(lambda: http("GET", f"{state['base']}/api/health/ready", timeout=3).status == 200, 60, "the tunnel")
    assert http("POST", f"{state['base']}/api/users/first-register", CREDS).status in (200, 201)
    state["token"] = http("POST", f"{state['base']}/api/users/login", CREDS).json()["token"]
    yield state
    state["tunnel"].terminate()
    for tag in state["variants"]:
        docker("rmi", "-f", tag, check=False)
    print("\n" + "\n".join(FIGURES))


def deploy(site, *data: str, env: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """deploy.py with the module's settings (no pre-update backup unless asked) and, when given, another .env."""
    env_file = site["env_file"]
    if env is not None:
        env_file = site["folder"] / f"{hashlib.sha256(env.encode()).hexdigest()[:8]}.env"
        env_file.write_text(env)
    args = [a for d in ("backup_before_update=false", *data) for a in ("--data", d)]
    return run_pyinfra(site["vps"], env_file, "deploy.py", *args, env=ENV, timeout=timeout)


def task(site, name: str, *data: str, env: str | None = None) -> subprocess.CompletedProcess:
    env_file = site["env_file"]
    if env is not None:
        env_file = site["folder"] / "task.env"
        env_file.write_text(env)
    return run_pyinfra(site["vps"], env_file, name, *[a for d in data for a in ("--data", d)], env=ENV)


def sh(site, command: str, check: bool = True) -> str:
    return site["vps"].exec("sh", "-c", command, check=check).stdout.strip()


def serving_container(site) -> str:
    return sh(site, f"cat {APP_DIR}/releases/.serving")


def app_env(site, key: str) -> str:
    """What the serving app container has in its environment for `key` ("" when unset)."""
    return site["vps"].exec("docker", "exec", serving_container(site), "printenv", key, check=False).stdout.strip()


def psql(site, sql: str, db: str = "postgres") -> str:
    """SQL (on stdin) run by psql in the db container, as the app's role."""
    return site["vps"].exec("sh", "-c", f"cd {APP_DIR} && docker compose exec -T db psql -XAt -q -v ON_ERROR_STOP=1 "
                            f"-U payload -d {db}", input=sql).stdout.strip()


def db_container(site) -> str:
    return sh(site, f"cd {APP_DIR} && docker compose ps -q db")


def version(site) -> str:
    return http("GET", f"{site['base']}/api/health", timeout=10).json()["version"]


def ready(site) -> bool:
    return http("GET", f"{site['base']}/api/health/ready", timeout=5).status == 200


def variant(site, testbed, tag: str, cmd: str = "") -> str:
    """The running version's image under another tag (another image id: a label), optionally another command."""
    variant_image(f"example:{site['first']}", f"example:{tag}", testbed, cmd)
    site["variants"].append(f"example:{tag}")
    return tag


def releases_log(site) -> list[LogLine]:
    return [LogLine.parse(line) for line in sh(site, f"cat {APP_DIR}/releases/log").splitlines()]


def test_a_rotated_app_secret_is_released_under_traffic_and_leaves_the_database_alone(site):
    """Review item 2: an app-only variable changed on a running site: 0 failed requests and writes, the db
    container untouched, and it holds none of the app's secrets."""
    db = db_container(site)
    NOW["APP_API_KEY"] = "key-2"
    site["env_file"].write_text(env_text())
    with Traffic(site["base"], site["token"]) as traffic:
        out = deploy(site)
    assert out.returncode == 0, out.stdout[-4000:]
    FIGURES.append(f"secret rotation: {traffic.summary()}")
    assert traffic.failures == 0 and traffic.failed_writes == 0, (traffic.summary(), traffic.errors[:5])
    assert traffic.requests >= 20 * (traffic.ended - traffic.started) and traffic.acknowledged
    assert db_container(site) == db, "the database container was replaced"
    assert "the database service changed" not in out.stdout
    assert app_env(site, "APP_API_KEY") == "key-2"
    db_env = sh(site, f"docker inspect -f '{{{{range .Config.Env}}}}{{{{println .}}}}{{{{end}}}}' {db}")
    assert "PAYLOAD_SECRET" not in db_env and "APP_API_KEY" not in db_env and "POSTGRES_PASSWORD=" in db_env


def test_the_database_password_cannot_change_by_accident_and_rotates_as_documented(site):
    """Review item 3: POSTGRES_PASSWORD changed in .env alone would leave the app unable to log in (postgres keeps
    the one it was created with): refused with one line, nothing changed. Changed in the database first (the
    documented rotation), the same deploy releases it."""
    before = sh(site, f"sha256sum {APP_DIR}/.env")
    db = db_container(site)
    changed = env_text(POSTGRES_PASSWORD="tx-password-2")
    out = deploy(site, env=changed)
    assert out.returncode != 0
    assert re.search(r"POSTGRES_PASSWORD in .+ is not the password of the database role payload on the server",
                     out.stdout), out.stdout[-3000:]
    assert sh(site, f"sha256sum {APP_DIR}/.env") == before and db_container(site) == db and ready(site)

    # The rotation: the role's password changed in the database (what psql's \password does), then the deploy.
    psql(site, "ALTER ROLE payload PASSWORD 'tx-password-2'")
    NOW["POSTGRES_PASSWORD"] = "tx-password-2"
    site["env_file"].write_text(env_text())
    out = deploy(site)
    assert out.returncode == 0, out.stdout[-4000:]
    wait_until(lambda: ready(site), 60, "the site on the rotated password")
    assert "tx-password-2" in app_env(site, "DATABASE_URI")


def test_a_rollback_keeps_todays_secrets(site, testbed):
    """Review item 4: a secret rotated because it leaked (with a new version out) does not come back with a
    rollback to the version before; no kept copy on the server holds it any more."""
    first = version(site)
    tag = variant(site, testbed, "tx-b")
    out = deploy(site, f"app_version={tag}")
    assert out.returncode == 0, out.stdout[-3000:]
    NOW["APP_API_KEY"] = "key-3"
    site["env_file"].write_text(env_text())
    out = deploy(site, f"app_version={tag}")
    assert out.returncode == 0, out.stdout[-3000:]
    assert app_env(site, "APP_API_KEY") == "key-3"
    out = task(site, "tasks/rollback.py", f"version={first}")
    assert out.returncode == 0, out.stdout[-3000:]
    assert f"rolled back from {tag} to {first}" in out.stdout
    wait_until(lambda: ready(site), 60, "the site after the rollback")
    assert version(site) == first
    assert app_env(site, "APP_API_KEY") == "key-3"
    assert sh(site, f"grep -l -e key-1 -e key-2 {APP_DIR}/releases/*.env || true") == ""


def test_a_settings_only_release_rolls_back_to_the_settings_before_and_further_back_after(site):
    """Review item 10: a release is a version with its settings. A settings-only change rolled back returns to
    the settings before (not to an older version); a second rollback goes further back, not forth again."""
    first = version(site)
    site["env_file"].write_text(env_text(SITE_MODE="two"))
    out = deploy(site)
    assert out.returncode == 0, out.stdout[-3000:]
    assert app_env(site, "SITE_MODE") == "two" and version(site) == first
    out = task(site, "tasks/rollback.py")
    assert out.returncode == 0, out.stdout[-3000:]
    wait_until(lambda: ready(site), 60, "the site after the rollback")
    assert version(site) == first and app_env(site, "SITE_MODE") == "one"
    out = task(site, "tasks/rollback.py")
    assert out.returncode == 0, out.stdout[-3000:]
    wait_until(lambda: ready(site), 60, "the site after the second rollback")
    assert app_env(site, "SITE_MODE") == "one", "the second rollback went back to the settings it left"
    assert app_env(site, "APP_API_KEY") == NOW["APP_API_KEY"]
    listed = task(site, "tasks/rollback.py", "list=true")
    assert listed.returncode == 0 and "(current)" in listed.stdout
    site["env_file"].write_text(env_text())
    assert deploy(site).returncode == 0


def test_a_database_that_cannot_start_is_started_again_on_its_previous_settings(site, testbed):
    """Review item 7: a new database image that cannot start: the release fails, the previous database is up
    again and the site answers, as the message says."""
    tag = "postgres:tx-broken"
    built = subprocess.run(["docker", "build", "--label", f"vpskit.testbed.session={testbed}", "-t", tag, "-"],
                           input='FROM postgres:17\nENTRYPOINT ["sh", "-c", "echo tx: this database cannot start; '
                                 'exit 1"]\n', text=True, capture_output=True,
                           env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=300)
    assert built.returncode == 0, built.stderr
    site["variants"].append(tag)
    before = version(site)
    start = time.monotonic()
    out = deploy(site, f"postgres_image={tag}", "health_timeout=60")
    FIGURES.append(f"database that cannot start: failed after {time.monotonic() - start:.0f}s")
    assert out.returncode != 0
    assert "the database is back on its previous settings" in out.stdout, out.stdout[-3000:]
    state = sh(site, f"docker inspect -f '{{{{.Config.Image}}}} {{{{.State.Health.Status}}}}' {db_container(site)}")
    assert state == "postgres:17 healthy"
    wait_until(lambda: ready(site), 60, "the site on its database")
    assert version(site) == before


@pytest.mark.parametrize(("image", "said"), [
    ("postgres:18", "postgres_image postgres:18 is PostgreSQL 18, but the database on the server holds PostgreSQL "
                    "17 data, which 18 cannot open (the site would stay down)"),
    ("postgres:16.4", "postgres_image postgres:16.4 is PostgreSQL 16, older than the PostgreSQL 17 data on the "
                      "server"),
])
def test_another_postgres_major_is_refused_before_anything_changes(site, image, said):
    """Issue 26, item 1: a postgres_image of another major than the data's (PG_VERSION in the database's volume)
    would not open the data; the deploy says so in one line and changes nothing (no image shipped either)."""
    files = sh(site, f"sha256sum {APP_DIR}/docker-compose.yml {APP_DIR}/.env")
    db = db_container(site)
    out = deploy(site, f"postgres_image={image}")
    assert out.returncode != 0
    assert said in out.stdout, out.stdout[-3000:]
    assert "Traceback" not in out.stdout
    assert sh(site, f"sha256sum {APP_DIR}/docker-compose.yml {APP_DIR}/.env") == files
    assert db_container(site) == db and ready(site)
    assert image not in sh(site, "docker images --format '{{.Repository}}:{{.Tag}}'")


def test_a_release_killed_on_the_server_is_recorded_as_failed(site, testbed):
    """Review item 8: the release process dies without writing its result (SIGKILL): the deploy ends within
    seconds with one line, the release log records the attempt as failed, the site keeps serving, and the next
    deploy releases again."""
    before = version(site)
    tag = variant(site, testbed, "tx-hang", "setInterval(() => {}, 1000)")
    proc = popen_pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", f"app_version={tag}",
                         "--data", "backup_before_update=false", "--data", "health_timeout=300", env=ENV)
    try:
        unit = wait_until(lambda: sh(site, "systemctl list-units --no-legend --plain --state=active "
                                           "'vpskit-release-example-*' | awk '{print $1}'", check=False), 300,
                          "the release unit")
        # This attempt's own log (earlier attempts' logs say "waiting up to" too: killed before its files were in
        # place, the attempt would leave nothing for the next deploy to find).
        attempt = unit.strip().removeprefix("vpskit-release-example-").removesuffix(".service")
        wait_until(lambda: "waiting up to" in sh(site, f"cat {APP_DIR}/releases/attempts/{attempt}.log",
                                                 check=False), 120,
                   "the new container")
        killed = time.monotonic()
        sh(site, f"systemctl kill -s KILL {unit}")
        out, _ = proc.communicate(timeout=90)
        ended = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    FIGURES.append(f"killed release: the deploy ended {ended:.1f}s after the kill")
    assert proc.returncode != 0
    assert "ended without a result" in out, out[-3000:]
    assert releases_log(site)[-1].version == tag and releases_log(site)[-1].result == "release:failed"
    assert ready(site) and version(site) == before
    out = deploy(site)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "the files in place are not the ones last released" in out.stdout, out.stdout[-3000:]
    assert version(site) == before
    assert len(sh(site, f"cd {APP_DIR} && docker compose ps -a -q app").split()) == 1


def upload(site, name: str) -> None:
    body, ctype = multipart({"_payload": '{"alt": "x"}'}, {"file": (name, os.urandom(4096), "application/x-bin")})
    r = http("POST", f"{site['base']}/api/media", body,
             headers={"Authorization": f"JWT {site['token']}", "Content-Type": ctype})
    assert r.status == 201, r.body[:300]


def posts(site) -> list[str]:
    r = http("GET", f"{site['base']}/api/posts?limit=200", headers={"Authorization": f"JWT {site['token']}"})
    return sorted(d["title"] for d in r.json()["docs"])


@pytest.mark.parametrize("failure,said", [
    ("media swap", "the app serves the data it had"),
    ("old database in use", "nothing was changed"),
])
def test_a_failed_restore_leaves_the_app_serving_the_data_it_had(site, failure, said):
    """Review item 9: a restore that fails at the swap (a media file that cannot be moved, after the app
    stopped; the name the live database is renamed to still in use by a connection) leaves the app serving,
    on the data it had, and the live database accepting connections."""
    upload(site, f"tx-{failure.replace(' ', '-')}.bin")
    out = task(site, "tasks/backup.py")
    assert out.returncode == 0, out.stdout[-3000:]
    auth = {"Authorization": f"JWT {site['token']}"}
    assert http("POST", f"{site['base']}/api/posts", {"title": f"after the backup ({failure})"},
                headers=auth).status == 201
    before = posts(site)
    media = "/var/lib/docker/volumes/example_media/_data"
    if failure == "media swap":
        # chattr (e2fsprogs) is not in the test VPS's minimal Debian: from Debian's mirror, as an operator would.
        sh(site, "command -v chattr || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                 "e2fsprogs >/dev/null; }")
        pinned = sh(site, f"ls {media} | grep -v '^\\.' | head -1")
        sh(site, f"chattr +i {media}/{pinned}")

        def undo() -> None:
            sh(site, f"chattr -i {media}/{pinned}")
    else:
        psql(site, "CREATE DATABASE payload_before_restore")
        sh(site, f"cd {APP_DIR} && docker compose exec -d -T db psql -U payload -d payload_before_restore "
                 "-c 'select pg_sleep(600)'")
        in_use = "select count(*) from pg_stat_activity where datname = 'payload_before_restore'"
        wait_until(lambda: psql(site, in_use) == "1", 30, "the open connection")

        def undo() -> None:
            psql(site, "select pg_terminate_backend(pid) from pg_stat_activity "
                       "where datname = 'payload_before_restore'")
            wait_until(lambda: psql(site, in_use) == "0", 30, "the connection to end")
            psql(site, "DROP DATABASE IF EXISTS payload_before_restore")
    try:
        out = task(site, "tasks/restore.py")
    finally:
        undo()
    assert out.returncode != 0
    wait_until(lambda: ready(site), 120, "the app on the data it had")
    assert posts(site) == before
    assert said in out.stdout, out.stdout[-3000:]
    assert psql(site, "select datallowconn from pg_database where datname = 'payload'") == "t"
    assert sh(site, f"ls -A {media} | grep '^.vpskit-' || true") == ""


def test_a_backup_of_a_newer_postgres_major_is_refused_before_anything_changes(site):
    """Issue 26, item 4: a backup whose manifest says a newer major than the server's (as one taken after an
    upgrade, restored on a server still on the old major) is refused in one line before the safety backup."""
    out = task(site, "tasks/backup.py")
    assert out.returncode == 0, out.stdout[-3000:]
    name = sh(site, f"ls {BACKUPS} | grep -E '^[0-9]{{8}}T[0-9]{{6}}Z$' | tail -1")
    manifest = f"{BACKUPS}/{name}/manifest.json"
    sh(site, f"sed -i 's/\"postgres_version\": \"17[.0-9]*\"/\"postgres_version\": \"18.1\"/' {manifest}")
    assert '"postgres_version": "18.1"' in sh(site, f"cat {manifest}")
    kept = sh(site, f"ls {BACKUPS}")
    out = task(site, "tasks/restore.py", f"backup={name}")
    assert out.returncode != 0
    assert (f"backup {name} was taken from PostgreSQL 18, newer than this server's PostgreSQL 17, which cannot "
            "restore it") in out.stdout, out.stdout[-3000:]
    assert sh(site, f"ls {BACKUPS}") == kept  # no safety backup either
    assert ready(site)


def test_a_database_made_under_another_collation_version_fails_the_health_check_until_reindexed(site):
    """Issue 26, item 5: a database whose recorded collation version is not the library's (what a new base image
    under the same postgres_image tag causes; made here by recording an older version for an ICU database) fails
    the health check with what to run; once that is run, the check passes again."""
    psql(site, "CREATE DATABASE tx_icu LOCALE_PROVIDER icu ICU_LOCALE 'en' TEMPLATE template0")
    try:
        psql(site, "UPDATE pg_database SET datcollversion = '1.0' WHERE datname = 'tx_icu'")
        out = task(site, "tasks/health.py")
        assert out.returncode != 0
        assert re.search(r"FAIL collation: database tx_icu was made with collation version 1\.0, the image's library "
                         r"now has [0-9.]+: its text indexes may give wrong answers until rebuilt: REINDEX DATABASE "
                         r"tx_icu; ALTER DATABASE tx_icu REFRESH COLLATION VERSION", out.stdout), out.stdout[-3000:]
        psql(site, "REINDEX DATABASE tx_icu", db="tx_icu")  # the fix, as the line says
        psql(site, "ALTER DATABASE tx_icu REFRESH COLLATION VERSION", db="tx_icu")
        out = task(site, "tasks/health.py")
        assert "ok   collation: every database's collation version is the library's" in out.stdout, out.stdout[-3000:]
    finally:
        psql(site, "DROP DATABASE IF EXISTS tx_icu")


def test_a_deploy_waits_for_a_running_backup(site, testbed):
    """Review item 11: the pre-update backup of a deploy waits (bounded, saying so) for a backup that holds the
    backups' lock, instead of failing at once."""
    tag = variant(site, testbed, "tx-after-backup")
    sh(site, f"mkdir -p {BACKUPS} && (flock {BACKUPS}/.lock sleep 25 >/dev/null 2>&1 < /dev/null &)")
    wait_until(lambda: sh(site, "pgrep -f 'sleep 25'", check=False), 10, "the backup holding the lock")
    start = time.monotonic()
    out = run_pyinfra(site["vps"], site["env_file"], "deploy.py", "--data", f"app_version={tag}", env=ENV)
    took = time.monotonic() - start
    FIGURES.append(f"deploy behind a 25 s backup: {took:.0f}s")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "waiting for another backup or restore" in out.stdout
    assert version(site) == tag


def test_tasks_that_only_read_change_nothing_on_the_server(site):
    """Review item 6: health (and the lists) upload nothing: not the local checkout's scripts, not this
    machine's configuration (a .env without NOTIFY_URL must not turn the server's alerts off)."""
    assert task(site, "tasks/backup.py").returncode == 0  # a backup there, so that the health check passes
    sh(site, f"echo '# edited on the server' >> {APP_DIR}/bin/media-swap.sh")
    files = f"$(find {APP_DIR}/bin -type f | sort) /etc/vpskit/example/offsite.env {APP_DIR}/.env"
    before = sh(site, f"sha256sum {files}")
    assert "vpskit_server/release.py" in before  # the server program's files are among them
    assert "NOTIFY_URL" in sh(site, "cat /etc/vpskit/example/offsite.env")
    ci = env_text(NOTIFY_URL=None)
    for name, data in (("tasks/health.py", ()), ("tasks/backup.py", ("list=true",)),
                       ("tasks/rollback.py", ("list=true",))):
        out = task(site, name, *data, env=ci)
        assert out.returncode == 0, (name, out.stdout[-3000:])
        assert sh(site, f"sha256sum {files}") == before, f"{name} changed files on the server"
    assert "differ from this checkout's (media-swap.sh)" in out.stdout


def test_a_dotenv_that_lacks_a_variable_the_server_has_is_refused(site):
    """Review item 6: a deploy (from CI, say) whose .env lacks variables the server has from the operator's
    .env is refused with one line naming them; nothing changes. A task that would push the alert settings
    without NOTIFY_URL is refused the same way."""
    before = sh(site, f"sha256sum {APP_DIR}/.env /etc/vpskit/example/offsite.env")
    ci = env_text(APP_API_KEY=None, SITE_MODE=None, NOTIFY_URL=None)
    out = deploy(site, env=ci)
    assert out.returncode == 2
    assert ("the server's configuration has APP_API_KEY, NOTIFY_URL, SITE_MODE, which this machine's .env lacks"
            in out.stdout), out.stdout[-3000:]
    out = task(site, "tasks/backup.py", env=ci)
    assert out.returncode == 2 and "the server's configuration has NOTIFY_URL" in out.stdout, out.stdout[-3000:]
    assert sh(site, f"sha256sum {APP_DIR}/.env /etc/vpskit/example/offsite.env") == before
    # Removed on purpose: the same .env goes through.
    out = deploy(site, "env_remove=APP_API_KEY,NOTIFY_URL,SITE_MODE", env=ci)
    assert out.returncode == 0, out.stdout[-3000:]
    assert app_env(site, "APP_API_KEY") == "" and "NOTIFY_URL" not in sh(site, "cat /etc/vpskit/example/offsite.env")
    out = deploy(site)  # the real .env again


def test_a_slow_release_webhook_holds_up_no_other_operation(site):
    """Review item 15: the release's message to NOTIFY_URL (notify_releases) goes out after the app's lock is
    given back: a webhook that never answers (here: a socket that accepts and says nothing; curl gives up after
    about a minute) does not keep a stop, a restore or the next release waiting."""
    sh(site, "systemd-run --unit vpskit-silent-hook python3 -c 'import socket, time; s = socket.socket(); "
             "s.bind((\"127.0.0.1\", 9999)); s.listen(8); time.sleep(900)'")
    try:
        # Another setting too: a release (alert settings alone go to the root-only file, which is no release).
        silent = env_text(NOTIFY_URL="http://127.0.0.1:9999/hook", SITE_MODE="webhook")
        out = deploy(site, "notify_releases=true", env=silent)
        assert out.returncode == 0, out.stdout[-3000:]
        assert "releasing" in out.stdout and app_env(site, "SITE_MODE") == "webhook"
        start = time.monotonic()
        stop = task(site, "tasks/stop.py", "lock_timeout=10", env=silent)
        took = time.monotonic() - start
        FIGURES.append(f"stop right after a release whose webhook hangs: {took:.1f}s")
        assert stop.returncode == 0, stop.stdout[-3000:]
        assert "still holds its lock" not in stop.stdout
    finally:
        sh(site, "systemctl stop vpskit-silent-hook", check=False)
    out = deploy(site)  # the real .env, and the site back up
    assert out.returncode == 0, out.stdout[-3000:]
    wait_until(lambda: ready(site), 60, "the site after the stop")
