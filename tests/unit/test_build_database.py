"""A build that can read the database (issue 24, item 1): which apps read Payload while `next build` renders
their pages, the decision, the build command (argument names, never values) and the Dockerfile (the build
stage alone declares them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vpskit import app_check, app_info, build_database, images
from vpskit.render import render
from vpskit.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
WEBSITE = ROOT / "tests" / "e2e" / "fixtures" / "payload-website"
PM = app_info.PackageManager("pnpm", "pnpm-lock.yaml", "10")


def reads(tmp_path, files: dict[str, str]) -> tuple[str, ...]:
    app = tmp_path / "app"
    for name, text in files.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    return app_info.build_reads(app, app / "src" / "app")


def test_the_website_fixture_reads_payload_while_building_the_others_do_not():
    assert app_info.build_reads(WEBSITE, WEBSITE / "src" / "app") == (
        "src/app/(frontend)/[slug]/page.tsx", "src/app/(frontend)/layout.tsx", "src/app/(frontend)/page.tsx")
    assert app_check.check(ROOT / "example").build_reads == ()  # its pages never ask Payload
    template = ROOT / "tests" / "e2e" / "fixtures" / "payload-template" / "src" / "app"
    assert app_info.build_reads(template.parents[1], template) == ()  # its page is dynamic


@pytest.mark.parametrize(("files", "found"), [
    # A static page that asks Payload: read at build time.
    ({"src/app/(site)/page.tsx": "const p = await getPayload({ config })"}, ("src/app/(site)/page.tsx",)),
    # Dynamic pages are rendered per request...
    ({"src/app/page.tsx": "export const dynamic = 'force-dynamic'\nawait getPayload({ config })"}, ()),
    ({"src/app/page.tsx": "const h = await headers()\nawait getPayload({ config })"}, ()),
    # ...but their generateStaticParams still runs at build time.
    ({"src/app/[slug]/page.tsx": "export const dynamic = 'force-dynamic'\nexport async function "
      "generateStaticParams() { return (await getPayload({ config })).find({}) }"}, ("src/app/[slug]/page.tsx",)),
    # Through the app's own imports, up to three deep (layout -> Header -> getGlobals -> getPayload).
    ({"src/app/layout.tsx": "import { Header } from '@/Header/Component'",
      "src/Header/Component.tsx": "import { getCachedGlobal } from '@/utilities/getGlobals'",
      "src/utilities/getGlobals.ts": "import x from './payload'\n",
      "src/utilities/payload.ts": "export default () => getPayload({ config })"}, ("src/app/layout.tsx",)),
    # Payload's own admin group, route handlers and api/ are not pages `next build` renders with data.
    ({"src/app/(payload)/admin/page.tsx": "getPayload({ config })", "src/app/api/x/route.ts": "getPayload({})",
      "src/app/(site)/feed/route.ts": "getPayload({})"}, ()),
    # A comment is not a call.
    ({"src/app/page.tsx": "// const p = await getPayload({ config })\n"}, ()),
])
def test_what_reads_payload_while_building(tmp_path, files, found):
    assert reads(tmp_path, files) == found


def info(build_reads=()):
    return app_info.AppInfo(PM, (), ("m1",), False, (), build_reads=build_reads)


def test_the_decision_and_what_the_build_line_says():
    page = ("src/app/(frontend)/page.tsx",)
    assert build_database.decide("auto", info()) == build_database.Decision(
        False, "no database (nothing reads Payload while building)")
    assert build_database.decide("auto", info(page)) == build_database.Decision(
        True, "a throwaway PostgreSQL (src/app/(frontend)/page.tsx read Payload while building)")
    assert build_database.decide("always", info()).use
    never = build_database.decide("never", info(page))
    assert not never.use and "though src/app/(frontend)/page.tsx read Payload" in never.why
    many = build_database.decide("auto", info(tuple(f"src/app/p{i}/page.tsx" for i in range(5))))
    assert "src/app/p2/page.tsx and 2 more read Payload" in many.why


def test_a_server_build_cannot_have_the_database_it_needs():
    with pytest.raises(SettingsError, match=r'build_on="server" builds without a database, but the build needs one '
                                            r"\(src/app/page.tsx read Payload while building\): set build_on"):
        build_database.decide("auto", info(("src/app/page.tsx",)), "server")
    assert not build_database.decide("auto", info(), "server").use


def test_the_build_command_names_its_arguments_and_never_their_values():
    cmd = images.build_command("site:v1", database=True)
    assert cmd[cmd.index("--network") + 1] == "host"
    args = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--build-arg"]
    assert args == ["DATABASE_URL", "DATABASE_URI", "PAYLOAD_SECRET"]  # values come from docker's environment
    assert "--network" not in images.build_command("site:v1") and "--build-arg" not in images.build_command("x:1")
    buildx = images.build_command("site:v1", cache="type=gha,scope=vpskit", database=True)
    assert buildx[:3] == ["docker", "buildx", "build"] and "network.host" in buildx


def test_only_the_build_stage_declares_the_database_arguments():
    from tests.unit.test_render import ctx

    text = render("Dockerfile", **{**ctx(), "build_with_database": True})
    build, runtime = text.split("FROM deps AS build")[1].split(" AS runtime")
    assert [ln for ln in build.splitlines() if ln.startswith("ARG ")] == [
        "ARG DATABASE_URL", "ARG DATABASE_URI", "ARG PAYLOAD_SECRET"]
    assert "RUN node node_modules/payload/bin.js migrate \\\n && npm run build" in build
    assert "ARG " not in runtime and "PAYLOAD_SECRET" not in runtime and "DATABASE_UR" not in runtime
    plain = render("Dockerfile", **ctx())
    assert "ARG " not in plain and "payload/bin.js migrate" not in plain


def test_the_website_fixture_is_refused_until_it_has_migrations(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(WEBSITE, app)
    (app / "next.config.ts").write_text("export default { output: 'standalone' }\n")
    shutil.copytree(ROOT / "files" / "app" / "api" / "health", app / "src" / "app" / "api" / "health")
    with pytest.raises(SettingsError, match="has no Payload migrations, so production would get no tables"):
        app_check.check(app)


def test_build_databases_of_deploys_that_are_gone_are_stale():
    names = ["vpskit-build-db-shop-4242-a1b2c3", "vpskit-build-db-my-site-77-ffffff", "vpskit-build-db-x-1-000000",
             "something-else"]
    assert build_database.stale(names, lambda pid: pid == 1) == [
        "vpskit-build-db-shop-4242-a1b2c3", "vpskit-build-db-my-site-77-ffffff"]
