"""The app checks before any server is touched, the build context, and the operator's .env."""

import io
import shutil
import subprocess
import tarfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from vpskit import app_check, envfile, images, settings
from vpskit.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example"


@pytest.fixture
def app(tmp_path):
    dest = tmp_path / "app"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("node_modules", ".next", "media"))
    return dest


def test_example_app_passes(app):
    app_check.check(app)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda a: (a / "next.config.mjs").write_text("export default {}"), "does not set output: 'standalone'"),
        (lambda a: (a / "package-lock.json").unlink(),
         r"has no lock file \(package-lock.json, pnpm-lock.yaml or yarn.lock\): run `npm install`, `pnpm install`"),
        (lambda a: shutil.rmtree(a / "src/app/api/health/ready"),
         r"no readiness route /api/health/ready: copy vpskit's folder files/app/api/health \(both routes, "
         r"health/route.ts and health/ready/route.ts\) into src/app/api/"),
        (lambda a: (a / "src/payload.config.ts").write_text("import { sqliteAdapter } from 'x'"),
         "does not use @payloadcms/db-postgres"),
        (lambda a: shutil.rmtree(a / "src/migrations"),
         r"has no Payload migrations, so production would get no tables: create the first one in the app \(npm run "
         r"payload migrate:create initial, with its database reachable as in development\), commit its migrations "
         r"folder, deploy again \(TROUBLESHOOTING 52\)"),
    ],
)
def test_what_is_missing_is_named(app, breakage, message):
    breakage(app)
    with pytest.raises(SettingsError, match=message):
        app_check.check(app)


def test_the_command_the_missing_routes_message_gives_works_in_an_app_without_an_api_folder(app):
    """Payload's templates have no src/app/api/: `cp -r` into it alone would make src/app/api a copy of
    health/ (the routes at /api/route.ts), so the message's command makes the folder first."""
    shutil.rmtree(app / "src/app/api")
    with pytest.raises(SettingsError) as err:
        app_check.check(app)
    command = str(err.value).split(", e.g. ", 1)[1]
    assert command.startswith("mkdir -p "), command
    subprocess.run(["sh", "-c", command], cwd=ROOT, check=True, timeout=30)
    app_check.check(app)
    assert (app / "src/app/api/health/ready/route.ts").is_file()


def test_build_context_has_no_secrets_or_dependencies(app):
    (app / ".env").write_text("PAYLOAD_SECRET=do-not-ship\n")
    (app / ".env.local").write_text("X=1\n")
    (app / "node_modules" / "x").mkdir(parents=True)
    (app / "node_modules" / "x" / "index.js").write_text("")
    with tarfile.open(fileobj=io.BytesIO(images.context_tar(app, "FROM scratch"))) as tar:
        names = tar.getnames()
    assert "Dockerfile" in names and "vpskit-entrypoint.sh" in names and "package-lock.json" in names
    assert not [n for n in names if n.startswith((".env", "node_modules", ".next", ".git/"))]


def test_version_is_stable_and_follows_content(app):
    v1 = images.version(app)
    assert v1 == images.version(app)
    (app / "src" / "extra.ts").write_text("export const x = 1\n")
    assert images.version(app) != v1
    assert images.version(app, "v9") == "v9"


def write(tmp_path, text):
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_missing_secret_named_with_the_fix(tmp_path):
    with pytest.raises(SettingsError, match="PAYLOAD_SECRET is missing .* generate one with"):
        envfile.read(write(tmp_path, "POSTGRES_PASSWORD=x\n"))
    with pytest.raises(SettingsError, match="PAYLOAD_SECRET .* is too short"):
        envfile.read(write(tmp_path, "POSTGRES_PASSWORD=x\nPAYLOAD_SECRET=short\n"))


def test_password_with_any_character_encoded_in_the_url(tmp_path):
    pw = "p@ss:w/o#rd? $x 'q' \"d\""
    values = {"POSTGRES_PASSWORD": pw, "PAYLOAD_SECRET": "s" * 40, "SMTP_HOST": "mail", "VPSKIT_HOST": "h"}
    env = envfile.server_env(values, settings.load({}))
    url = urlsplit(env["DATABASE_URI"])
    assert unquote(url.password) == pw and url.hostname == "db" and url.path == "/payload"
    assert env["SMTP_HOST"] == "mail" and "VPSKIT_HOST" not in env


def test_one_image_build_at_a_time_on_a_machine(tmp_path, capsys):
    import threading
    import time

    lock, spans = tmp_path / "build.lock", []

    def build(n):
        with images.build_lock(lock):
            start = time.monotonic()
            time.sleep(0.5)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=build, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    (a_start, a_end), (b_start, b_end) = sorted(spans)
    assert b_start >= a_end  # never two at once
    assert "waiting for another image build on this machine to end" in capsys.readouterr().err
