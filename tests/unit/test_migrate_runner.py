"""The migration runner is the app's own image (issue 24, item 4): the route vpskit adds to the build, the files it
adds to the context, and files/migrate.js run with node against a stand-in server.js (what the app's server does
decides what the runner reports)."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from vpskit import app_check, app_info, images, migrate_runner
from vpskit.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "tests" / "e2e" / "fixtures" / "payload-template"
NODE = shutil.which("node") or str(ROOT / ".testbed" / "toolchain" / "bin" / "node")
PM = app_info.PackageManager("pnpm", "pnpm-lock.yaml", "10")


def documented(tmp_path) -> Path:
    """The template fixture with the two changes the docs ask for (standalone output, the health routes)."""
    app = tmp_path / "app"
    shutil.copytree(TEMPLATE, app, ignore=shutil.ignore_patterns("node_modules", ".next"))
    (app / "next.config.ts").write_text("export default { output: 'standalone' }\n")
    shutil.copytree(ROOT / "files" / "app" / "api" / "health", app / "src" / "app" / "api" / "health")
    return app


def info(**where) -> app_info.AppInfo:
    return app_info.AppInfo(PM, (), ("m1",), False, (), **where)


def test_the_route_imports_the_app_s_own_config_and_migrations_list():
    path, source = migrate_runner.route(info())
    assert path == "src/app/api/vpskit-migrate/route.ts"
    assert "import config from '../../../payload.config'" in source
    assert "import { migrations } from '../../../migrations/index'" in source
    assert "await payload.db.migrate({ migrations })" in source
    # Without the run's token (every serving container): 404, nothing done.
    assert "if (!token || request.headers.get('x-vpskit-migrate') !== token)" in source
    _, root_layout = migrate_runner.route(info(app_dir="app", config="payload.config.ts",
                                               migrations_dir="db/migrations"))
    assert "import config from '../../../payload.config'" in root_layout
    assert "import { migrations } from '../../../db/migrations/index'" in root_layout


def test_the_route_is_added_only_when_vpskit_applies_the_migrations(tmp_path):
    example = app_check.check(ROOT / "example")  # prodMigrations: the app applies them at boot
    assert [name for name, _ in migrate_runner.build_files(example)] == ["vpskit-migrate.js"]
    template = app_check.check(documented(tmp_path))
    assert [name for name, _ in migrate_runner.build_files(template)] == [
        "vpskit-migrate.js", "src/app/api/vpskit-migrate/route.ts"]


def test_the_context_carries_the_added_files_and_the_version_follows_them(tmp_path):
    app = documented(tmp_path)
    extra = migrate_runner.build_files(app_check.check(app))
    with tarfile.open(fileobj=io.BytesIO(images.context_tar(app, "FROM scratch", extra))) as tar:
        names = tar.getnames()
        route = tar.extractfile("src/app/api/vpskit-migrate/route.ts").read().decode()
    assert "vpskit-migrate.js" in names and "src/payload.config.ts" in names
    assert names.count("src/app/api/vpskit-migrate/route.ts") == 1 and "migrate({ migrations })" in route
    changed = ((extra[0][0], extra[0][1] + b"\n// changed"), *extra[1:])
    assert images.recipe("FROM scratch", "none:0", extra) != images.recipe("FROM scratch", "none:0", changed)


def test_an_app_without_the_migrations_index_is_refused(tmp_path):
    app = documented(tmp_path)
    assert app_check.check(app).migrations_dir == "src/migrations"
    (app / "src" / "migrations" / "index.ts").unlink()
    with pytest.raises(SettingsError, match="the migrations folder has no index.ts"):
        app_check.check(app)


STAND_IN = """
const http = require('node:http')
const mode = process.env.STAND_IN
const server = http.createServer((req, res) => {
  const allowed = req.headers['x-vpskit-migrate'] === process.env.VPSKIT_MIGRATE_TOKEN
  console.log(`stand-in: ${req.method} ${req.url} token ${allowed ? 'right' : 'wrong'} on ${process.env.HOSTNAME}`)
  if (mode === 'crash') { console.log('Error running migration 20261130_000000_add_rating'); process.exit(1) }
  if (mode === 'not-found') { res.writeHead(404); return res.end('Not Found') }
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ ok: true, migrations: ['m1'] }))
})
setTimeout(() => server.listen(Number(process.env.PORT), process.env.HOSTNAME), 600)  // not listening at once
process.on('SIGTERM', () => { console.log('stand-in: stopped'); process.exit(0) })
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runner(tmp_path, mode: str) -> subprocess.CompletedProcess:
    (tmp_path / "server.js").write_text(STAND_IN)
    env = {"PATH": "/usr/bin:/bin", "PORT": str(free_port()), "STAND_IN": mode, "HOSTNAME": "0.0.0.0"}
    return subprocess.run([NODE, str(migrate_runner.DRIVER)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def test_runner_asks_its_own_server_with_its_token_and_stops_it(tmp_path):
    out = runner(tmp_path, "ok")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stand-in: POST /api/vpskit-migrate token right on 127.0.0.1" in out.stdout  # never on every address
    assert 'vpskit: migrations applied ({"ok":true,"migrations":["m1"]})' in out.stdout
    assert "stand-in: stopped" in out.stdout


def test_runner_reports_a_server_that_ended_while_migrating(tmp_path):
    out = runner(tmp_path, "crash")  # Payload ends the process after rolling a failed migration back
    assert out.returncode == 1
    assert "Error running migration 20261130_000000_add_rating" in out.stdout
    assert "vpskit: the app's server ended (exit 1) before the migrations were applied" in out.stderr


def test_runner_reports_an_image_without_the_route(tmp_path):
    out = runner(tmp_path, "not-found")
    assert out.returncode == 1
    assert "vpskit: /api/vpskit-migrate answered 404: Not Found" in out.stderr
