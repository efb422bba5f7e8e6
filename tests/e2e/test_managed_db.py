"""A managed Postgres instead of a db server (issue 14): two app servers on a test-bed network, the app's
database on a postgres of that network that only accepts TLS and gives the app a role that is neither
superuser nor allowed to create databases (as a provider does), and the test bed's S3 server for media.
DATABASE_URL in .env is all the operator adds. A first deploy, one database behind both app servers, backups
(pg_dump from the first app server, saying so), a restore without superuser rights, the restore drill, the
health check and a deploy with nothing changed. One cluster for the module."""

from __future__ import annotations

import os
import re
import time
from urllib.parse import quote

import pytest

from tests.sites import CREDS
from tests.support import S3Server, run_pyinfra, wait_until
from tests.testbed import vps as testbed_vps
from tests.testbed.vps import docker

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

APP = "example"
BUCKET = "vpskit-media"
SITE_PASSWORD = "m@naged pw/1"  # percent-encoded in the URL, as a provider's console gives it

# Sourced by the postgres image's entrypoint on first start (as the postgres user): a self-signed certificate,
# TLS required from the network, and the app's database owned by a plain role.
MANAGED_INIT = """\
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=managed-postgres \\
  -keyout "$PGDATA/server.key" -out "$PGDATA/server.crt" 2>/dev/null
chmod 600 "$PGDATA/server.key"
echo "ssl = on" >> "$PGDATA/postgresql.conf"
printf 'local all all trust\\nhostssl all all all scram-sha-256\\n' > "$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d postgres -v pw="$SITE_PASSWORD" <<'SQL'
CREATE ROLE site LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
CREATE DATABASE shop OWNER site;
SQL
"""


def address(container: str, net: str) -> str:
    return docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}',
                  container).stdout.strip()


def sql(cluster, query: str, user: str = "site") -> str:
    """A query on the managed database, from inside its container (its socket)."""
    out = docker("exec", cluster["pg"], "psql", "-XAt", "-U", user, "-d", "shop", "-c", query, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def cluster(vps_factory, testbed, tmp_path_factory, example_image):
    net = testbed_vps.network(f"vpskit-managed-{os.getpid()}", testbed)
    folder = tmp_path_factory.mktemp("managed")
    init = folder / "managed.sh"
    init.write_text(MANAGED_INIT)
    init.chmod(0o644)
    pg = f"vpskit-managed-pg-{os.getpid()}"
    docker("run", "-d", "--name", pg, "--network", net, "--label", f"vpskit.testbed.session={testbed}",
           "-e", "POSTGRES_USER=admin", "-e", "POSTGRES_PASSWORD=provider-admin-pw",
           "-e", f"SITE_PASSWORD={SITE_PASSWORD}", "-v", f"{init}:/docker-entrypoint-initdb.d/managed.sh:ro",
           "postgres:17")
    a, b = (vps_factory(tag, network=net, docker_ready=True) for tag in ("mapp-a", "mapp-b"))
    public = a.key.with_name(a.key.name + ".pub").read_text()
    b.exec("sh", "-c", "cat >> /home/deploy/.ssh/authorized_keys", input=public)
    known = folder / "known_hosts"
    known.write_text(a.known_hosts.read_text() + b.known_hosts.read_text())
    s3 = S3Server(f"vpskit-mmedia-{os.getpid()}", net, testbed).run().wait_ready()
    assert docker("exec", s3.name, "curl", "-fsS", "-m", "10", "-X", "PUT", f"http://127.0.0.1:5000/{BUCKET}",
                  check=False).returncode == 0
    wait_until(lambda: docker("exec", pg, "pg_isready", "-q", "-h", "127.0.0.1", check=False).returncode == 0, 90,
               "the managed postgres")
    url = (f"postgresql://site:{quote(SITE_PASSWORD, safe='')}@{address(pg, net)}:5432/shop"
           "?sslmode=require&uselibpqcompat=true")  # encrypted; node-postgres checks no CA with libpq's meaning
    env_file = folder / ".env"
    env_file.write_text(f"DATABASE_URL={url}\nPAYLOAD_SECRET=managed-payload-secret-0123456789abcdef\n"
                        f"S3_ACCESS_KEY_ID={s3.access_key}\nS3_SECRET_ACCESS_KEY={s3.secret_key}\n")
    ips = {v.name: address(v.name, net) for v in (a, b)}
    env = {"VPSKIT_HOST": "", "VPSKIT_SSH_PORT": "", "VPSKIT_DB_HOST": "",
           "VPSKIT_APP_HOSTS": f"127.0.0.1:{a.port} {ips[a.name]}, 127.0.0.1:{b.port} {ips[b.name]}",
           "VPSKIT_SSH_KEY": str(a.key), "VPSKIT_SSH_KNOWN_HOSTS": str(known),
           "VPSKIT_BACKUP_SCHEDULE": "", "VPSKIT_HEALTH_SCHEDULE": "", "VPSKIT_DRILL_SCHEDULE": "",
           "VPSKIT_MEDIA_BUCKET": BUCKET, "VPSKIT_MEDIA_ENDPOINT": f"http://{address(s3.name, net)}:5000"}
    started = time.monotonic()
    out = run_pyinfra(a, env_file, "deploy.py", env=env)
    first = time.monotonic() - started
    assert out.returncode == 0, out.stdout[-5000:]
    yield {"a": a, "b": b, "pg": pg, "env": env, "env_file": env_file, "first": first, "out": out.stdout,
           "version": example_image.split(":", 1)[1]}
    docker("rm", "-f", "-v", pg, check=False)
    s3.remove()


def run(cluster, task: str, *extra: str):
    return run_pyinfra(cluster["a"], cluster["env_file"], task, *extra, env=cluster["env"])


def on_server(vps, method: str, path: str, body: str = "", token: str = ""):
    """curl on the app server itself, to its published port: the JSON answer."""
    import json

    head = f"-H 'Authorization: JWT {token}' " if token else ""
    data = f"-H 'Content-Type: application/json' -d '{body}' " if body else ""
    out = vps.ssh(f"curl -fsS -m 10 -X {method} {head}{data}http://127.0.0.1:3000{path}", check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def titles(vps, token: str) -> set[str]:
    return {d["title"] for d in on_server(vps, "GET", "/api/posts?limit=1000&depth=0", token=token)["docs"]}


@pytest.fixture(scope="module")
def token(cluster):
    on_server(cluster["a"], "POST", "/api/users/first-register",
              f'{{"email": "{CREDS["email"]}", "password": "{CREDS["password"]}"}}')
    return on_server(cluster["a"], "POST", "/api/users/login",
                     f'{{"email": "{CREDS["email"]}", "password": "{CREDS["password"]}"}}')["token"]


def test_a_first_deploy_runs_the_app_on_both_servers_against_the_managed_database(cluster, token):
    print(f"\nfirst deploy of two app servers on a managed Postgres: {cluster['first']:.1f}s")
    for server in ("a", "b"):
        assert on_server(cluster[server], "GET", "/api/health/ready")["status"] == "ready"
        names = cluster[server].ssh("sudo docker ps --format '{{.Names}}'").stdout.split()
        assert not [n for n in names if "-db-" in n], names  # no database on the app servers
    # The schema is in the managed database, owned by the provider's plain role, over TLS.
    assert sql(cluster, "select count(*) from payload_migrations where batch > 0") != "0"
    assert sql(cluster, "select rolsuper or rolcreatedb from pg_roles where rolname = current_user") == "f"
    assert sql(cluster, "select count(*) from pg_stat_ssl join pg_stat_activity using (pid) "
                        "where datname = 'shop' and ssl and usename = 'site'", user="admin") != "0"
    # What one app server writes, the other reads.
    title = f"through A {time.time():.0f}"
    on_server(cluster["a"], "POST", "/api/posts", f'{{"title": "{title}"}}', token)
    assert title in titles(cluster["b"], token)
    # The password is in no output and in no file but the .env files (the live one, the pushed one, the kept
    # releases' and their attempts' copies, all root-only).
    assert SITE_PASSWORD not in cluster["out"] and quote(SITE_PASSWORD, safe="") not in cluster["out"]
    found = cluster["a"].ssh(f"sudo grep -rlF '{quote(SITE_PASSWORD, safe='')}' /opt/{APP} /etc/systemd /etc/vpskit "
                             "2>/dev/null || true").stdout.split()
    kept = rf"/opt/{APP}/((next/|releases/attempts/[^/]+/)?\.env|releases/\d+\.env)"
    assert found and all(re.fullmatch(kept, f) for f in found), found
    modes = cluster["a"].ssh("sudo stat -c %a " + " ".join(found)).stdout.split()
    assert set(modes) == {"600"}, list(zip(found, modes, strict=False))


def test_backup_restore_and_drill_run_on_the_first_app_server_without_superuser_rights(cluster, token):
    kept = f"before the backup {time.time():.0f}"
    on_server(cluster["a"], "POST", "/api/posts", f'{{"title": "{kept}"}}', token)
    backup = run(cluster, "tasks/backup.py")
    assert backup.returncode == 0, backup.stdout[-3000:]
    assert "nothing to do here: the backups are on the first app server" in backup.stdout
    done = [ln for ln in backup.stdout.splitlines() if "backup " in ln and " complete in " in ln]
    assert len(done) == 1 and f"127.0.0.1:{cluster['a'].port}" in done[0], done
    assert "(pg_dump of the external database" in done[0] and f"from the bucket {BUCKET}" in done[0], done
    name = done[0].split("backup ", 1)[1].split()[0]

    later = f"after the backup {time.time():.0f}"
    on_server(cluster["b"], "POST", "/api/posts", f'{{"title": "{later}"}}', token)
    restore = run(cluster, "tasks/restore.py", "--data", f"backup={name}")
    assert restore.returncode == 0, restore.stdout[-3000:]
    assert "in one transaction" in restore.stdout and f"restored backup {name}" in restore.stdout
    assert "the data from before this restore is the safety backup" in restore.stdout
    # Both app servers read the restored database.
    for server in ("a", "b"):
        wait_until(lambda s=server: (lambda t: kept in t and later not in t)(titles(cluster[s], token)), 60,
                   f"the restored posts on app server {server}")
    assert sql(cluster, "select count(*) from pg_database where datname like 'shop_%'", user="admin") == "0"

    drill = run(cluster, "tasks/restore.py", "--data", "drill=true")
    assert drill.returncode == 0, drill.stdout[-3000:]
    assert "vpskit drill: passed" in drill.stdout, drill.stdout[-3000:]
    assert not cluster["a"].ssh("sudo docker ps -a --format '{{.Names}}' | grep drill || true").stdout.strip()

    health = run(cluster, "tasks/health.py")
    assert health.returncode == 0, health.stdout[-3000:]
    assert "ok   database: the external database" in health.stdout and "ok   backup: last" in health.stdout


def test_a_restore_that_fails_leaves_the_managed_database_as_it_was(cluster, token):
    before = titles(cluster["a"], token)
    backup = run(cluster, "tasks/backup.py")
    assert backup.returncode == 0, backup.stdout[-3000:]
    name = [ln for ln in backup.stdout.splitlines() if " complete in " in ln][0].split("backup ", 1)[1].split()[0]
    # The provider makes another role the database's owner: the app (and a backup) still work, but the
    # restore cannot create its schema again once it has dropped it, inside its one transaction.
    sql(cluster, "alter database shop owner to admin", user="admin")
    try:
        restore = run(cluster, "tasks/restore.py", "--data", f"backup={name}")
        assert restore.returncode != 0
        assert "permission denied for database shop" in restore.stdout, restore.stdout[-3000:]
        rolled_back = "its transaction was rolled back, the live database is unchanged"
        assert rolled_back in restore.stdout, restore.stdout[-3000:]
    finally:
        sql(cluster, "alter database shop owner to site", user="admin")
    # The app was started again on the data it had, and the task waited for it; both servers read it.
    assert "vpskit restore: healthy after" in restore.stdout, restore.stdout[-3000:]
    assert titles(cluster["a"], token) == before == titles(cluster["b"], token)


def test_a_postgresql_upgrade_is_refused_in_one_line_with_nothing_changed(cluster, token):
    """Issue 26: the provider upgrades a managed database; the task says so and touches neither server."""
    files = f"sudo sha256sum /opt/{APP}/docker-compose.yml /opt/{APP}/.env; sudo docker ps -q --no-trunc | sort"
    before = {v: cluster[v].ssh(files).stdout for v in ("a", "b")}
    out = run(cluster, "tasks/upgrade_postgres.py", "--data", "to=postgres:18")
    assert out.returncode != 0
    refusal = "vpskit: the database is external (DATABASE_URL): its provider upgrades it; nothing was changed"
    assert {ln.strip() for ln in out.stdout.splitlines() if "upgrades it" in ln} == {refusal}, out.stdout[-3000:]
    assert {v: cluster[v].ssh(files).stdout for v in ("a", "b")} == before


def test_a_deploy_with_nothing_changed_changes_nothing(cluster):
    import re

    out = run(cluster, "deploy.py", "--data", f"app_version={cluster['version']}")
    assert out.returncode == 0, out.stdout[-4000:]
    assert "releasing" not in out.stdout
    table = out.stdout.split("--> Results:", 1)[1].splitlines()[2:]
    rows = [m.groups() for m in (re.match(r"^\s+(.+?)\s+([0-9])\s+(\S+)\s+(\S+)\s+(\S+)\s*$", ln) for ln in table)
            if m and not m.group(1).startswith("Grand total")]
    assert rows and not [r for r in rows if r[2] != "-"], out.stdout[-6000:]
