"""What vpskit reads from an app before building it (package manager, migrations, upload folders), and what
that changes in the generated Dockerfile, compose file and release command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.unit.test_operations import HEALTHY, IMAGES, STACK_ARGS, run, stack_fact
from vpskit import app_check, app_info, commands, envfile, operations, settings
from vpskit.facts import AppliedMigrations
from vpskit.render import render
from vpskit.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example"
TEMPLATE = ROOT / "tests" / "e2e" / "fixtures" / "payload-template"


@pytest.fixture
def app(tmp_path):
    dest = tmp_path / "app"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("node_modules", ".next", "media"))
    return dest


def use_lock(app: Path, lock: str, text: str = "lockfileVersion: '9.0'\n", manager: str = "") -> None:
    (app / "package-lock.json").unlink()
    (app / lock).write_text(text)
    if manager:
        pkg = json.loads((app / "package.json").read_text())
        (app / "package.json").write_text(json.dumps({**pkg, "packageManager": manager}))


def pm_install(pm: app_info.PackageManager) -> str:
    """The install command without the cache clean-up that follows it."""
    return pm.install.split(" && ")[0]


def test_npm_is_read_from_the_example():
    info = app_check.check(EXAMPLE)
    assert str(info.package_manager) == "npm (package-lock.json)" and info.package_manager.setup == ""
    assert info.package_manager.install == "npm ci --no-audit --no-fund && npm cache clean --force"
    assert info.migrations == ("20261128_202135_initial", "20261129_235109_media_storage_columns",
                               "20261207_112320_jobs_queue")
    assert info.prod_migrations
    assert not info.migrated_by_vpskit  # the example applies its own at boot
    assert info.upload_dirs == ()  # its Media collection writes to MEDIA_DIR


def test_pnpm_with_the_version_from_package_json(app):
    use_lock(app, "pnpm-lock.yaml", manager="pnpm@10.12.1+sha512.abc")
    pm = app_check.check(app).package_manager
    assert (pm.name, pm.version, pm.lock_file) == ("pnpm", "10.12.1", "pnpm-lock.yaml")
    assert pm.setup == "npm install -g --force --no-audit --no-fund pnpm@10.12.1"
    assert pm_install(pm) == "pnpm install --frozen-lockfile --store-dir /tmp/pnpm-store"
    assert pm.run("build") == "pnpm run build"


def test_yarn_classic_and_berry(app):
    use_lock(app, "yarn.lock", "# yarn lockfile v1\n")
    pm = app_check.check(app).package_manager
    assert (pm.name, pm.version, pm.berry) == ("yarn", "1", False)
    assert pm_install(pm) == "yarn install --frozen-lockfile --non-interactive --network-timeout 600000"
    (app / "yarn.lock").write_text("__metadata:\n  version: 8\n")
    with pytest.raises(SettingsError, match="does not set nodeLinker: node-modules"):
        app_check.check(app)
    (app / ".yarnrc.yml").write_text("nodeLinker: node-modules\n")
    pm = app_check.check(app).package_manager
    assert pm.berry and pm_install(pm) == "yarn install --immutable" and "@yarnpkg/cli-dist@4" in pm.setup
    assert app_check.check(app).install_files == (".yarnrc.yml",)


def test_two_lock_files_ask_which_and_the_setting_answers(app):
    (app / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    with pytest.raises(SettingsError) as err:
        app_check.check(app)
    assert str(err.value).endswith('has 2 lock files (package-lock.json and pnpm-lock.yaml): which package manager '
                                   'builds it? set package_manager = "npm" or "pnpm" (group_data or --data), or '
                                   "delete the other lock file")
    assert app_check.check(app, "pnpm").package_manager.name == "pnpm"
    assert app_check.check(app, "npm").package_manager.name == "npm"
    with pytest.raises(SettingsError, match="package_manager='yarn' but .* has no yarn.lock"):
        app_check.check(app, "yarn")
    with pytest.raises(SettingsError, match='use one of "", npm, pnpm, yarn'):
        settings.load({"package_manager": "bun"})


def test_migrations_without_prod_migrations_are_vpskit_s_job(app):
    config = app / "src" / "payload.config.ts"
    config.write_text(config.read_text().replace("prodMigrations: migrations,", ""))
    (app / "src" / "migrations" / "20261231_000000_more.ts").write_text("export async function up() {}\n")
    info = app_check.check(app)
    assert info.migrations == ("20261128_202135_initial", "20261129_235109_media_storage_columns",
                               "20261207_112320_jobs_queue", "20261231_000000_more")
    assert not info.prod_migrations and info.migrated_by_vpskit
    assert info.context("example", "v2")["migrate_image"] == "example:v2"  # the runner is the app's own image
    # A comment does not count as the setting.
    config.write_text(config.read_text() + "\n// prodMigrations: migrations,\n")
    assert app_check.check(app).migrated_by_vpskit


@pytest.mark.parametrize(
    ("upload", "dirs"),
    [
        ("upload: true,", ("/app/media",)),  # Payload's default: the slug, from the server's working directory
        ("upload: { staticDir: 'uploads/files' },", ("/app/uploads/files",)),
        ("upload: { staticDir: '/srv/files' },", ("/srv/files",)),
        ("upload: { staticDir: process.env.MEDIA_DIR || 'media' },", ()),
    ],
)
def test_upload_folders_are_where_the_collection_writes(app, upload, dirs):
    media = app / "src" / "collections" / "Media.ts"
    media.write_text("export const Media = {\n  slug: 'media',\n  " + upload + "\n  fields: [],\n}\n")
    assert app_check.check(app).upload_dirs == dirs


def test_upload_folder_fixed_at_build_time_names_the_one_line_change(app):
    media = app / "src" / "collections" / "Media.ts"
    media.write_text("export const Media = {\n  slug: 'media',\n  upload: { staticDir: path.resolve(dirname, "
                     "'../media') },\n}\n")
    with pytest.raises(SettingsError) as err:
        app_check.check(app)
    assert str(err.value) == (
        "src/collections/Media.ts: staticDir path.resolve(dirname, '../media') is resolved where the app was built, "
        "not where it runs (the image's /app is read-only): write `staticDir: process.env.MEDIA_DIR || "
        "path.resolve(dirname, '../media')` (vpskit mounts the backed-up media volume at /data/media), or drop "
        "staticDir")


def rendered(info: app_info.AppInfo, name: str, version: str = "v1") -> str:
    s = settings.load({})
    s.update(app_image=f"example:{version}", app_version=version, **info.context("example", version))
    return render(name, **s)


def test_dockerfile_installs_with_the_app_s_package_manager():
    pm = app_info.PackageManager("pnpm", "pnpm-lock.yaml", "10.12.1")
    info = app_info.AppInfo(pm, (".npmrc",), ("20261129_000000_initial",), False, ("/app/media",))
    text = rendered(info, "Dockerfile")
    assert "RUN npm install -g --force --no-audit --no-fund pnpm@10.12.1" in text
    assert "COPY package.json pnpm-lock.yaml .npmrc ./\nRUN pnpm install --frozen-lockfile" in text
    assert "&& rm -rf /tmp/pnpm-store" in text  # no package cache in the dependency stage (the build's cache)
    assert "RUN pnpm run build" in text
    assert 'VPSKIT_MIGRATIONS="20261129_000000_initial"' in text
    # No runner stage of its own (it shipped the whole dependency tree): the runtime image carries the runner.
    assert "AS migrate" not in text and "COPY vpskit-entrypoint.sh vpskit-migrate.js /usr/local/bin/" in text
    assert "mkdir -p /data/media /app/.next/cache /app/media" in text
    npm = rendered(app_check.check(EXAMPLE), "Dockerfile")
    assert "COPY package.json package-lock.json ./\nRUN npm ci --no-audit --no-fund" in npm
    assert "npm install -g" not in npm


def test_compose_mounts_uploads_and_runs_migrations_only_when_asked():
    pm = app_info.PackageManager("pnpm", "pnpm-lock.yaml", "10")
    info = app_info.AppInfo(pm, (), ("m1",), False, ("/app/media",))
    c = yaml.safe_load(rendered(info, "docker-compose.yml", "v7"))
    assert c["services"]["app"]["volumes"] == ["media:/data/media", "media:/app/media"]
    migrate = c["services"]["migrate"]
    assert migrate["image"] == "example:v7" and migrate["profiles"] == ["migrate"]
    assert migrate["command"] == ["node", "/usr/local/bin/vpskit-migrate.js"]
    assert migrate["env_file"] == ".env" and migrate["networks"] == ["internal"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    example = yaml.safe_load(rendered(app_check.check(EXAMPLE), "docker-compose.yml"))
    assert "migrate" not in example["services"]
    assert example["services"]["app"]["volumes"] == ["media:/data/media"]


def test_release_applies_pending_migrations_first():
    facts = {**stack_fact(HEALTHY), **IMAGES}
    cmds, _ = run(operations.stack_applied, facts, **STACK_ARGS, pending_migrations=("m2", "m3"))
    from tests.unit.test_operations import START

    assert cmds[0].args == (START + " --migrate m2,m3",)  # the release checks each is recorded after the runner
    assert run(operations.stack_applied, facts, **STACK_ARGS, pending_migrations=())[0] == []


def test_applied_migrations_fact():
    fact = AppliedMigrations()
    assert fact.process(["migration 20261128_a", "migration 20261201_b"]) == ("20261128_a", "20261201_b")
    assert fact.process([]) == ()
    assert "/opt/x/bin/vpskit-server db migrations --app-dir /opt/x" in commands.applied_migrations("/opt/x")


def test_database_url_under_both_names():
    env = envfile.server_env({"POSTGRES_PASSWORD": "pw", "PAYLOAD_SECRET": "s" * 40}, settings.load({}))
    assert env["DATABASE_URL"] == env["DATABASE_URI"] == "postgresql://payload:pw@db:5432/payload"


def test_the_payload_template_needs_exactly_the_two_documented_changes(tmp_path):
    from tests.e2e.test_payload_template import as_documented

    pristine = tmp_path / "pristine"
    shutil.copytree(TEMPLATE, pristine)
    with pytest.raises(SettingsError, match=r"next.config.ts does not set output: 'standalone'"):
        app_check.check(pristine)
    (pristine / "next.config.ts").write_text((pristine / "next.config.ts").read_text().replace(
        "const nextConfig: NextConfig = {\n", "const nextConfig: NextConfig = {\n  output: 'standalone',\n"))
    with pytest.raises(SettingsError, match=r"has no liveness route /api/health: copy vpskit's folder"):
        app_check.check(pristine)
    info = app_check.check(as_documented(tmp_path / "ready"))
    assert str(info.package_manager) == "pnpm 10.34.9 (pnpm-lock.yaml)"
    assert info.migrations == ("20261129_000000_initial",) and info.migrated_by_vpskit
    assert info.upload_dirs == ("/app/media",)


def test_public_address_reaches_payload_only_when_known():
    values = {"POSTGRES_PASSWORD": "pw", "PAYLOAD_SECRET": "s" * 40}
    assert "PAYLOAD_PUBLIC_SERVER_URL" not in envfile.server_env(values, settings.load({}))
    env = envfile.server_env(values, settings.load({"domain": "shop.example.com"}))
    assert env["PAYLOAD_PUBLIC_SERVER_URL"] == "https://shop.example.com"
    mine = envfile.server_env({**values, "PAYLOAD_PUBLIC_SERVER_URL": "https://www.shop.example.com"},
                              settings.load({"domain": "shop.example.com"}))
    assert mine["PAYLOAD_PUBLIC_SERVER_URL"] == "https://www.shop.example.com"  # the operator's own wins


def test_each_build_carries_its_deployment_id():
    from tests.unit.test_render import ctx

    assert "NEXT_DEPLOYMENT_ID=abc123" in render("Dockerfile", **ctx())  # the version being built
