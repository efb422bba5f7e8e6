"""Payload's `website` template as users have it (issue 24): tests/e2e/fixtures/payload-website queries Payload
while `next build` renders its pages (generateStaticParams, the home page's list, the layout's globals), has no
migrations yet and no src/app/api folder. With only the documented changes it is refused before anything
changes, in one line naming the fix; after the fix (its first migration, made as the docs say) one deploy run
gives a working site: built beside a throwaway PostgreSQL whose secrets reach no layer, admin, first user, a
page created via REST rendered on the front end, the globals in the layout, a media round trip. Then a second
run changes nothing, and a table gone makes readiness and tasks/health.py fail naming it."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_deploy import results
from tests.support import free_port, http, multipart, run_pyinfra, wait_until
from vpskit import app_info, build_database, images, node_version, settings, steps
from vpskit.render import render

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "e2e" / "fixtures" / "payload-website"
APP = "site"
APP_DIR = f"/opt/{APP}"
PORT = 3000


def as_documented(dest: Path) -> Path:
    """The fixture with the two changes docs/DOCKER-DEPLOYMENT.md asks of a Payload template, the health routes
    copied with the README's own command (the app has no src/app/api folder)."""
    shutil.copytree(FIXTURE, dest, ignore=shutil.ignore_patterns("node_modules", ".next", "media"))
    config = dest / "next.config.ts"
    text = config.read_text()
    opening = re.search(r"const nextConfig(: NextConfig)? = \{\n", text)
    assert opening, "the fixture's next.config.ts has no `const nextConfig = {`"
    config.write_text(text[: opening.end()] + "  output: 'standalone',\n" + text[opening.end():])
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"`(mkdir -p <your app>/src/app/api && cp -r files/app/api/health <your app>/src/app/api/)`",
                        readme)
    assert command, "the README no longer gives the health routes' copy command"
    subprocess.run(["sh", "-c", command[1].replace("<your app>", str(dest))], cwd=ROOT, check=True, timeout=60)
    return dest


def server_state(vps) -> str:
    return vps.exec("sh", "-c", "ls -laR /opt /var/backups 2>&1; command -v docker; ls /etc/systemd/system",
                    check=False).stdout


def deploy(bed, *extra: str):
    return run_pyinfra(bed["vps"], bed["env_file"], "deploy.py", "--data", f"app_path={bed['app']}", "--data",
                       f"app_name={APP}", *extra, timeout=1500)


def create_first_migration(app: Path, testbed: str) -> list[str]:
    """The fix the refusal names, as a user makes it: `pnpm payload migrate:create initial` in the app, with its
    dependencies installed and a development database. Here both come from the test bed: the app's dependency
    stage built by vpskit's own Dockerfile (the deploy's build then finds it cached) and a throwaway PostgreSQL."""
    s = settings.load({"app_name": APP, "app_path": str(app)})
    info = app_info.inspect(app, app / "src" / "payload.config.ts", "", app / "src" / "app")
    s["app"] = info
    node_version.settle(s)
    s.update(app_image=f"{APP}:deps", app_version="deps", **info.context(APP, "deps"))
    extra = steps.build_files(s)
    deps = f"{APP}-deps:{testbed}"
    images.LocalBuild(deps, app, render("Dockerfile", **s), "deps", "its dependencies (for migrate:create)",
                      extra=extra).run()
    with build_database.throwaway(s["postgres_image"], f"{APP}-dev") as env:
        out = subprocess.run(
            ["docker", "run", "--rm", "--network", "host", "-v", f"{app}:/w", "-w", "/w", "-u", "0",
             "-e", "DATABASE_URL", "-e", "PAYLOAD_SECRET", "--entrypoint", "sh", deps, "-c",
             "ln -s /app/node_modules node_modules && node node_modules/payload/bin.js migrate:create initial; "
             "rc=$?; rm node_modules; exit $rc"],
            capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", **env})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    subprocess.run(["chown", "-R", f"{app.stat().st_uid}:{app.stat().st_gid}", str(app)], check=True, timeout=60)
    return sorted(p.name for p in (app / "src" / "migrations").iterdir())


def psql(vps, sql: str) -> str:
    return vps.ssh(f"cd {APP_DIR} && sudo docker compose exec -T db psql -XAt -U payload -d payload -c "
                   f"\"{sql}\"").stdout


ASK_READY = """
PORT=3999 HOSTNAME=127.0.0.1 node server.js >/dev/null 2>&1 &
for _ in $(seq 90); do
  if answer=$(node -e 'fetch("http://127.0.0.1:3999/api/health/ready").then(async r => console.log(r.status + " " +
    await r.text()), () => process.exit(1))'); then echo "$answer"; exit 0; fi
  sleep 1
done
exit 1
"""


def ready_of_an_app_bundling_no_migration(vps) -> str:
    """The readiness answer of the deployed image run with VPSKIT_MIGRATIONS empty (no bundled migration)."""
    out = vps.exec("sh", "-c", f"cd {APP_DIR} && docker compose run --rm --no-deps -T -e VPSKIT_MIGRATIONS= app "
                   f"sh -c {shlex.quote(ASK_READY)}", check=False)
    assert out.returncode == 0 and out.stdout.strip().startswith("503 "), out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def bed(vps_factory, testbed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("website")
    env_file = folder / ".env"
    env_file.write_text("POSTGRES_PASSWORD=website-password\nPAYLOAD_SECRET=website-payload-secret-0123456789abcd\n")
    state = {"vps": vps_factory("website", docker_ready=True), "app": as_documented(folder / "app"),
             "env_file": env_file, "testbed": testbed}
    yield state
    if "tunnel" in state:
        state["tunnel"].terminate()
    if "version" in state:
        subprocess.run(["docker", "image", "rm", f"{APP}:{state['version']}"], capture_output=True, timeout=120)
    # Kept until here: while they exist, the deploy's build finds the dependencies stage they share cached.
    subprocess.run(["docker", "image", "rm", f"{APP}-deps:{testbed}", f"{APP}-deps-cache:deps"], capture_output=True,
                   timeout=120)


def test_without_migrations_it_is_refused_before_anything_changes(bed):
    assert not (bed["app"] / "src" / "migrations").exists()
    before = server_state(bed["vps"])
    out = deploy(bed)
    assert out.returncode == 2, out.stdout[-3000:]
    line = (f"vpskit: {bed['app']} has no Payload migrations, so production would get no tables: create the first "
            "one in the app (pnpm run payload migrate:create initial, with its database reachable as in "
            "development), commit its migrations folder, deploy again (TROUBLESHOOTING 52)")
    assert line in out.stdout and out.stdout.count("vpskit: ") == 1, out.stdout[-3000:]
    assert "Connecting to hosts" not in out.stdout
    assert server_state(bed["vps"]) == before


def test_after_the_fix_one_deploy_gives_a_working_site(bed):
    made = create_first_migration(bed["app"], bed["testbed"])
    assert "index.ts" in made and any(re.fullmatch(r"\d{8}_\d{6}_initial\.ts", m) for m in made), made
    t0 = time.monotonic()
    out = deploy(bed)
    assert out.returncode == 0, out.stdout[-6000:]
    bed["version"] = re.search(rf"Image {APP}:(\S+) built here and shipped", out.stdout)[1]
    bed["first"] = out.stdout
    # Built beside a throwaway database, because its pages read Payload while building; the build says so.
    assert ("a throwaway PostgreSQL (src/app/(frontend)/[slug]/page.tsx, src/app/(frontend)/layout.tsx, "
            "src/app/(frontend)/page.tsx read Payload while building)") in out.stdout, out.stdout[-6000:]
    assert 'Node 24 (package.json engines.node ">=24.15.0")' in out.stdout
    assert "1 migration(s) to apply before traffic" in out.stdout and "vpskit: migrations applied (" in out.stdout
    print(f"\nwebsite template: the deploy after the fix (build beside a database, migrate, release) took "
          f"{time.monotonic() - t0:.0f}s")
    local = free_port()
    bed["base"] = f"http://127.0.0.1:{local}"
    bed["tunnel"] = bed["vps"].forward(PORT, local)
    wait_until(lambda: http("GET", f"{bed['base']}/api/health/ready", timeout=5).status == 200, 60, "the tunnel")


def test_the_build_s_database_and_secret_reached_no_layer(bed):
    ref = f"{APP}:{bed['version']}"
    history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    env = subprocess.run(["docker", "image", "inspect", "-f", "{{json .Config.Env}}", ref], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for name in build_database.BUILD_ARGS:
        assert f"{name}=" not in history and name not in env
    # Every byte of the image as it ships: no connection string of a build database.
    saved = subprocess.run(["docker", "save", ref], capture_output=True, timeout=600, check=True).stdout
    assert len(saved) > 50_000_000
    assert not re.search(rb"postgresql://payload:[0-9a-f]{32}@127\.0\.0\.1:\d+", saved)
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={build_database.LABEL}"],
                          capture_output=True, text=True, timeout=60).stdout
    assert not left.strip()  # the throwaway database is gone


def test_admin_first_user_pages_globals_and_media_work(bed):
    base = bed["base"]
    admin = http("GET", f"{base}/admin", timeout=30)
    assert admin.status == 200 and b"<html" in admin.body.lower()
    creds = {"email": "owner@example.com", "password": "a long enough password"}
    assert http("POST", f"{base}/api/users/first-register", creds, timeout=30).status in (200, 201)
    token = http("POST", f"{base}/api/users/login", creds, timeout=30).json()["token"]
    auth = {"Authorization": f"JWT {token}"}
    # A page created via REST: rendered on the front end (a slug the build did not know), and listed at home.
    page = http("POST", f"{base}/api/pages", {"title": "About the shop", "slug": "about-us",
                                              "summary": "Made after the build."}, headers=auth, timeout=30)
    assert page.status == 201, page.body[:500]
    shown = http("GET", f"{base}/about-us", timeout=60)
    assert shown.status == 200 and b"About the shop" in shown.body and b"Made after the build." in shown.body
    wait_until(lambda: b"About the shop" in http("GET", f"{base}/", timeout=30).body, 60,
               "the home page to list the new page (revalidated by the page's hook)")
    assert http("GET", f"{base}/no-such-page", timeout=30).status == 404
    # Layout data from a global, revalidated by its tag.
    footer = http("POST", f"{base}/api/globals/footer", {"copyright": "(c) 2026 The Shop"}, headers=auth, timeout=30)
    assert footer.status == 200, footer.body[:500]
    wait_until(lambda: b"(c) 2026 The Shop" in http("GET", f"{base}/about-us", timeout=30).body, 60,
               "the layout to show the footer global")
    # Media round trip, byte for byte.
    data = bytes(range(256)) * 400
    body, ctype = multipart({"_payload": '{"alt": "a pattern"}'}, {"file": ("pattern.bin", data,
                                                                           "application/octet-stream")})
    made = http("POST", f"{base}/api/media", body, headers={**auth, "Content-Type": ctype}, timeout=30)
    assert made.status == 201, made.body[:500]
    back = http("GET", f"{base}{made.json()['doc']['url']}", headers=auth, timeout=30)
    assert back.status == 200 and hashlib.sha256(back.body).digest() == hashlib.sha256(data).digest()


def test_a_second_run_changes_nothing(bed):
    again = deploy(bed)
    assert again.returncode == 0, again.stdout[-3000:]
    rows = results(again.stdout)
    assert rows and all(success == "-" and nochange == "1" for success, _, nochange in rows.values()), rows
    assert "building " not in again.stdout and "throwaway PostgreSQL" not in again.stdout


def test_a_table_gone_fails_readiness_and_health_naming_it(bed):
    psql(bed["vps"], "alter table footer rename to footer_gone")
    try:
        ready = http("GET", f"{bed['base']}/api/health/ready", timeout=10)
        assert ready.status == 503 and "footer" in ready.json()["reason"], ready.body[:500]
        health = run_pyinfra(bed["vps"], bed["env_file"], "tasks/health.py", "--data", f"app_path={bed['app']}",
                             "--data", f"app_name={APP}")
        assert health.returncode != 0
        assert re.search(r"FAIL /api/health/ready: HTTP 503: the database lacks 1 table\(s\) the app needs \(footer",
                         health.stdout), health.stdout[-3000:]
        # The same for an app that bundles no migration at all: this image, told it bundles none, in a one-off
        # container of its own (its server on 127.0.0.1 inside it).
        assert "footer" in ready_of_an_app_bundling_no_migration(bed["vps"])
    finally:
        psql(bed["vps"], "alter table footer_gone rename to footer")
    wait_until(lambda: http("GET", f"{bed['base']}/api/health/ready", timeout=10).status == 200, 60, "ready again")
