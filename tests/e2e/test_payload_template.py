"""A user's own app, not ours: tests/e2e/fixtures/payload-template is written the way Payload's official
with-postgres template is (pnpm lock file, DATABASE_URL, a committed migration and no prodMigrations, a
Media collection with Payload's default upload folder). The test makes only the two changes the docs ask
for (output: 'standalone', the health routes) and deploys it: the admin renders, the first user registers,
an upload comes back byte for byte, each migration is recorded once, and a second run changes nothing.
Then: a broken migration fails the release with the running version untouched under a probe; a schema
behind the code makes readiness 503 and tasks/health.py fail naming it; a yarn variant installs its
dependencies from yarn.lock in vpskit's Dockerfile."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.test_deploy import results
from tests.support import app_build, app_version, free_port, http, multipart, run_pyinfra, wait_until
from vpskit import images, shipping

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "e2e" / "fixtures" / "payload-template"
YARN_LOCK = ROOT / "tests" / "e2e" / "fixtures" / "payload-template-yarn.lock"
APP = "tmpl"
APP_DIR = f"/opt/{APP}"
INITIAL = sorted(p.stem for p in (FIXTURE / "src" / "migrations").glob("*.ts") if p.stem != "index")
BROKEN = "20261130_000000_add_rating"
BROKEN_VERSION = "add-rating"
SILENT_VERSION = "silent-runner"
BROKEN_MIGRATION = """import { MigrateDownArgs, MigrateUpArgs, sql } from '@payloadcms/db-postgres'

export async function up({ db }: MigrateUpArgs): Promise<void> {
  await db.execute(sql`ALTER TABLE "media" ADD COLUMN "rating" integer`)
  await db.execute(sql`ALTER TABLE "no_such_table" ADD COLUMN "rating" integer`)
}

export async function down({ db }: MigrateDownArgs): Promise<void> {
  await db.execute(sql`ALTER TABLE "media" DROP COLUMN IF EXISTS "rating"`)
}
"""


def as_documented(dest: Path) -> Path:
    """The fixture with exactly the two changes docs/DOCKER-DEPLOYMENT.md asks of a Payload template."""
    shutil.copytree(FIXTURE, dest, ignore=shutil.ignore_patterns("node_modules", ".next", "media"))
    config = dest / "next.config.ts"
    text = config.read_text()
    opening = re.search(r"const nextConfig(: NextConfig)? = \{\n", text)
    assert opening, "the fixture's next.config.ts has no `const nextConfig = {`"
    config.write_text(text[: opening.end()] + "  output: 'standalone',\n" + text[opening.end():])
    shutil.copytree(ROOT / "files" / "app" / "api" / "health", dest / "src" / "app" / "api" / "health")
    return dest


def with_broken_migration(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    migrations = dest / "src" / "migrations"
    (migrations / f"{BROKEN}.ts").write_text(BROKEN_MIGRATION)
    index = migrations / "index.ts"
    text = index.read_text()
    entry = f"  {{\n    up: broken.up,\n    down: broken.down,\n    name: '{BROKEN}',\n  }},\n]"
    index.write_text(f"import * as broken from './{BROKEN}'\n" + text[: text.rindex("]")] + entry + "\n")
    return dest


class Background:
    """A build run in a thread while other tests go on (the machine has 2 cores; a deploy mostly waits)."""

    def __init__(self, build: images.LocalBuild):
        self.build, self.error, self.seconds = build, None, 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        t0 = time.monotonic()
        try:
            self.build.run()
        except Exception as exc:  # noqa: BLE001 - reported by result()
            self.error = exc
        self.seconds = time.monotonic() - t0

    def result(self, timeout: float = 1200) -> float:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"building {self.build.ref} took over {timeout:.0f}s"
        assert self.error is None, str(self.error)[-3000:]
        return self.seconds


def psql(vps, sql: str) -> str:
    return vps.ssh(f"cd {APP_DIR} && sudo docker compose exec -T db psql -XAt -U payload -d payload -c "
                   f"\"{sql}\"").stdout


def probed(base: str, action):
    """(what `action` returns, the statuses of the ready route probed every 0.2 s while it ran)."""
    seen, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            try:
                seen.append(http("GET", f"{base}/api/health/ready", timeout=5).status)
            except OSError as err:
                seen.append(repr(err))
            time.sleep(0.2)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        return action(), seen
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    root = tmp_path_factory.mktemp("payload-template")
    main = as_documented(root / "app")
    yarn = root / "yarn"
    shutil.copytree(main, yarn)
    (yarn / "pnpm-lock.yaml").unlink()
    shutil.copy(YARN_LOCK, yarn / "yarn.lock")
    package = yarn / "package.json"  # as a yarn user has it (yarn 1 refuses a "packageManager" naming pnpm)
    package.write_text(package.read_text().replace('"pnpm@10.34.9"', '"yarn@1.22.22"'))
    assert '"yarn@1.22.22"' in package.read_text()
    # The yarn variant is built under its own name (its build-stage images apart), after the first deploy's
    # build: two `next build`s at once on two cores only slow each other down.
    return {"main": main, "broken": with_broken_migration(main, root / "broken"), "yarn": yarn}


@pytest.fixture(scope="module")
def env_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("operator") / ".env"
    path.write_text("POSTGRES_PASSWORD=template-password\nPAYLOAD_SECRET=template-payload-secret-0123456789abcdef\n")
    return path


def deploy(vps, env_file: Path, app: Path, *extra: str):
    return run_pyinfra(vps, env_file, "deploy.py", "--data", f"app_path={app}", "--data", f"app_name={APP}",
                       *extra)


@pytest.fixture(scope="module")
def site(vps_factory, env_file, apps):
    vps = vps_factory("template", docker_ready=True)
    # The first deploy builds, whatever an earlier run left on this machine (unless test_multihost built the same
    # version under its own name meanwhile: then it is tagged, test_first_deploy_says_what_it_built_and_migrated).
    version = app_version(apps["main"], APP)
    subprocess.run(["docker", "image", "rm", f"{APP}:{version}"], capture_output=True, timeout=120)
    shipping.forget(APP, version, 5055)  # nor from this machine's registry
    t0 = time.monotonic()
    first = deploy(vps, env_file, apps["main"])
    assert first.returncode == 0, first.stdout[-5000:]
    local = free_port()
    state = {"vps": vps, "base": f"http://127.0.0.1:{local}", "first": first, "seconds": time.monotonic() - t0}
    state["tunnel"] = vps.forward(3000, local)
    wait_until(lambda: http("GET", f"{state['base']}/api/health/ready", timeout=3).status == 200, 60, "the tunnel")
    # The version with a broken migration (its runner is its own image, so it is a build of its own), then the
    # yarn variant, build while the checks below run against the first release (they mostly wait).
    subprocess.run(["docker", "image", "rm", f"{APP}:{BROKEN_VERSION}"], capture_output=True, timeout=120)
    shipping.forget(APP, BROKEN_VERSION, 5055)
    broken = app_build(apps["broken"], APP)
    state["broken_build"] = Background(dataclasses.replace(broken, ref=f"{APP}:{BROKEN_VERSION}", shareable=False))
    # The yarn variant up to its dependencies stage: what differs with yarn is its setup and its install from
    # yarn.lock; the build stage runs `yarn run build`, the same `<pm> run build` line (test_app_info) on the
    # same sources as the pnpm build deployed above.
    state["yarn_build"] = Background(dataclasses.replace(app_build(apps["yarn"], f"{APP}-yarn"), target="deps",
                                                         ref=f"{APP}-yarn:deps", shareable=False))
    yield state
    state["tunnel"].terminate()
    subprocess.run(["docker", "image", "rm", f"{APP}:{BROKEN_VERSION}"], capture_output=True, timeout=120)


def test_first_deploy_says_what_it_built_and_migrated(site):
    out = site["first"].stdout
    # Built here, or tagged from test_multihost's build of the same sources and recipe (its app is another name
    # for this fixture): whichever module deploys second finds the version built.
    built = re.search(rf"building {APP}:\S+ on this machine with (.*):\n", out)
    twin = re.search(rf"{APP}:\S+: the same sources and recipe as \S+, tagged rather than built", out)
    assert built or twin, out[-4000:]
    if built:
        # engines.node asks for Node 24 (as Payload's newest templates do): built on that image.
        assert built[1].startswith('pnpm 10.34.9 (pnpm-lock.yaml), Node 24 (package.json engines.node ">=24.15.0")')
    # It runs Node 24 either way: the node:24 image was picked for engines.node.
    running = site["vps"].ssh(f"cd {APP_DIR} && sudo docker compose exec -T app node --version").stdout
    assert running.startswith("v24."), running
    assert f"{len(INITIAL)} migration(s) to apply before traffic: {', '.join(INITIAL)}" in out
    assert "applying migrations before version" in out
    # The runner is the version's own image (issue 24: a runner image of its own shipped 219 MB): nothing else
    # was built or shipped, and its server said what it applied.
    assert f"(by the new version's own image, {APP}:" in out and "Migration runner" not in out
    assert "-migrate:" not in out and "vpskit: migrations applied (" in out
    assert re.search(rf"migrations applied by \S+: {' '.join(INITIAL)}", out), out[-3000:]
    print(f"\npayload template: first deploy (pnpm build, migrate, release) took {site['seconds']:.0f}s")


def test_admin_renders_and_the_first_user_registers(site):
    admin = http("GET", f"{site['base']}/admin", timeout=30)
    assert admin.status == 200 and b"<html" in admin.body.lower()
    creds = {"email": "owner@example.com", "password": "a long enough password"}
    assert http("POST", f"{site['base']}/api/users/first-register", creds, timeout=30).status in (200, 201)
    site["token"] = http("POST", f"{site['base']}/api/users/login", creds).json()["token"]
    assert http("GET", f"{site['base']}/admin", timeout=30).status == 200


def test_upload_to_the_default_folder_comes_back_and_is_backed_up(site, env_file, apps):
    data = os.urandom(40_000)
    body, ctype = multipart({"_payload": '{"alt": "a random file"}'},
                            {"file": ("random.bin", data, "application/octet-stream")})
    auth = {"Authorization": f"JWT {site['token']}"}
    made = http("POST", f"{site['base']}/api/media", body, headers={**auth, "Content-Type": ctype}, timeout=30)
    assert made.status == 201, made.body[:500]
    doc = made.json()["doc"]
    back = http("GET", f"{site['base']}{doc['url']}", headers=auth, timeout=30)
    assert back.status == 200 and hashlib.sha256(back.body).hexdigest() == hashlib.sha256(data).hexdigest()
    # Written where Payload's default put it (/app/media), which is the backed-up media volume.
    listed = site["vps"].ssh(f"cd {APP_DIR} && sudo docker compose exec -T app ls /app/media").stdout.split()
    assert doc["filename"] in listed
    backup = run_pyinfra(site["vps"], env_file, "tasks/backup.py", "--data", f"app_path={apps['main']}",
                         "--data", f"app_name={APP}")
    assert backup.returncode == 0, backup.stdout[-3000:]
    tar = site["vps"].ssh(f"sudo sh -c 'tar -tf /var/backups/{APP}/*/media.tar'").stdout
    assert f"./{doc['filename']}" in tar.split()


def test_the_migration_route_answers_nobody_in_a_serving_container(site):
    """The route vpskit adds to the build acts only for the runner's own token, which no serving container has."""
    for headers in ({}, {"x-vpskit-migrate": ""}, {"x-vpskit-migrate": "undefined"}):
        answer = http("POST", f"{site['base']}/api/vpskit-migrate", b"", headers=headers, timeout=30)
        assert answer.status == 404, (headers, answer.status, answer.body[:200])
    env = site["vps"].ssh(f"cd {APP_DIR} && sudo docker compose exec -T app printenv").stdout
    assert "VPSKIT_MIGRATE_TOKEN" not in env


def test_every_migration_is_recorded_once(site):
    rows = psql(site["vps"], "select name, count(*) from payload_migrations group by name order by name").split()
    assert rows == [f"{name}|1" for name in INITIAL]
    assert site["vps"].ssh(f"sudo cat {APP_DIR}/releases/*.migrations").stdout.split() == INITIAL


def test_second_deploy_changes_nothing(site, env_file, apps):
    again = deploy(site["vps"], env_file, apps["main"])
    assert again.returncode == 0, again.stdout[-3000:]
    rows = results(again.stdout)
    assert rows and all(success == "-" and nochange == "1" for success, _, nochange in rows.values()), rows
    assert "Migration runner" not in again.stdout  # nothing pending: no runner built or shipped


def test_broken_migration_fails_the_release_and_the_site_keeps_serving(site, env_file, apps):
    # The version with the broken migration was built from its sources beside the checks above; the deploy
    # ships it (only the layers the server lacks) and its own image runs the migration, which fails.
    site["broken_build"].result()
    before = psql(site["vps"], "select name from payload_migrations order by id").split()
    version_before = http("GET", f"{site['base']}/api/health").json()["version"]
    out, seen = probed(site["base"], lambda: deploy(site["vps"], env_file, apps["broken"], "--data",
                                                    f"app_version={BROKEN_VERSION}", "--data",
                                                    "backup_before_update=false"))
    assert out.returncode != 0, out.stdout[-6000:]
    assert f"Migrating: {BROKEN}" in out.stdout and "no_such_table" in out.stdout
    # One image shipped for a release with a migration: no runner of its own (today it was 219 MB).
    shipped = re.search(rf"shipped {APP}:{BROKEN_VERSION}: (\d+) layer\(s\) sent, (\d+) already on the server, "
                        r"([\d.]+) MB over SSH", out.stdout)
    assert shipped, out.stdout[-4000:]
    assert "Migration runner" not in out.stdout and "-migrate:" not in out.stdout
    print(f"\none-migration release: {shipped[1]} layer(s), {shipped[3]} MB shipped (the app image; the runner "
          f"adds nothing), {shipped[2]} layer(s) already on the server")
    assert re.search(rf"migration {BROKEN} failed \(Payload's output above; exit \d+\): version {BROKEN_VERSION} "
                     "was not released", out.stdout), out.stdout[-4000:]
    assert f"{version_before} keeps serving" in out.stdout
    failed = [s for s in seen if s != 200]
    assert len(seen) > 20 and not failed, f"{len(failed)} of {len(seen)} requests failed: {failed[:5]}"
    assert http("GET", f"{site['base']}/api/health").json()["version"] == version_before
    assert psql(site["vps"], "select name from payload_migrations order by id").split() == before
    # The first statement of the failed migration was rolled back with it.
    assert "rating" not in psql(site["vps"], "select column_name from information_schema.columns "
                                             "where table_name = 'media'").split()
    print(f"\nbroken migration: {len(seen)} probe requests during the failed release, {len(failed)} failed")


def test_a_runner_that_records_nothing_fails_the_release_and_the_site_keeps_serving(site, env_file, apps):
    # A migration runner that ends with exit 0 and applies nothing (what a runner never started looks like
    # from outside: an empty log, exit 0): the release runs it once more, then stops before any app starts.
    # The first version's image with a runner that does nothing stands in under the version's name (an explicit
    # version names its content, so the deploy ships this one).
    first = app_version(apps["main"], APP)
    silent = (f"FROM {APP}:{first}\nUSER root\nRUN echo \"console.log('a runner that applies nothing')\" > "
              "/usr/local/bin/vpskit-migrate.js\nUSER 1000:1000\n")
    build = subprocess.run(["docker", "build", "-q", "-t", f"{APP}:{SILENT_VERSION}", "-"], text=True,
                           input=silent, capture_output=True, timeout=300)
    assert build.returncode == 0, build.stderr
    version_before = http("GET", f"{site['base']}/api/health").json()["version"]
    before = psql(site["vps"], "select name from payload_migrations order by id").split()
    out, seen = probed(site["base"], lambda: deploy(site["vps"], env_file, apps["broken"], "--data",
                                                    f"app_version={SILENT_VERSION}", "--data",
                                                    "backup_before_update=false"))
    subprocess.run(["docker", "rmi", f"{APP}:{SILENT_VERSION}"], capture_output=True, timeout=60)
    assert out.returncode != 0, out.stdout[-6000:]
    assert (f"the migration runner ended (exit 0) without recording {BROKEN} in the database: running it once "
            "more") in out.stdout, out.stdout[-4000:]
    assert (f"the migration runner ended twice (exit 0) without recording {BROKEN} in the database (its output "
            f"above): version {SILENT_VERSION} was not released, {version_before} keeps serving") in out.stdout
    assert "waiting up to" not in out.stdout.split("running it once more")[-1]  # no app container was started
    failed = [s for s in seen if s != 200]
    assert len(seen) > 10 and not failed, f"{len(failed)} of {len(seen)} requests failed: {failed[:5]}"
    assert http("GET", f"{site['base']}/api/health").json()["version"] == version_before
    assert psql(site["vps"], "select name from payload_migrations order by id").split() == before


def test_schema_behind_the_code_is_not_ready_and_health_names_it(site, env_file, apps):
    last = INITIAL[-1]
    # The newest record goes (kept aside and put back): the code bundles a migration the database lacks.
    psql(site["vps"], "create table pm_saved as select * from payload_migrations where id = (select max(id) from "
                      "payload_migrations); delete from payload_migrations where id = (select id from pm_saved)")
    try:
        ready = http("GET", f"{site['base']}/api/health/ready", timeout=10)
        assert ready.status == 503
        assert ready.json()["reason"] == f"database schema is behind the code: 1 pending migration(s): {last}"
        health = run_pyinfra(site["vps"], env_file, "tasks/health.py", "--data", f"app_path={apps['main']}",
                             "--data", f"app_name={APP}")
        assert health.returncode != 0
        assert f"FAIL /api/health/ready: HTTP 503: database schema is behind the code: 1 pending migration(s): " \
               f"{last}" in health.stdout, health.stdout[-3000:]
    finally:
        psql(site["vps"], "insert into payload_migrations select * from pm_saved; drop table pm_saved")
    assert http("GET", f"{site['base']}/api/health/ready", timeout=10).status == 200


def test_yarn_variant_installs_its_dependencies_from_yarn_lock(site, apps):
    yarn = site["yarn_build"]
    seconds = yarn.result()
    ref = yarn.build.ref
    try:
        out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", ref, "-c",
                              "yarn --version && node -p \"require('./node_modules/payload/package.json').version\" "
                              "&& test -x node_modules/.bin/next"], capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["docker", "image", "rm", ref, f"{APP}-yarn-cache:deps"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    yarn_version, payload_version = out.stdout.split()
    assert yarn_version == "1.22.22"  # the version the packageManager field names, installed by the setup line
    locked = re.search(r'^"?payload@[^\n]*:\n  version "([^"]+)"', (apps["yarn"] / "yarn.lock").read_text(), re.M)
    assert locked and payload_version == locked[1], (payload_version, locked and locked[1])
    print(f"\nyarn variant: dependencies installed from yarn.lock in {seconds:.0f}s (beside the checks of the "
          "first release)")
