"""page_cache = "shared" (issue 27, item 2): vpskit's cache handler goes into the build, named to Next.js for the
build only, unless the app brings its own handler or the setting says local."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.unit.test_render import ctx
from vpskit import steps
from vpskit.render import render

ROOT = Path(__file__).resolve().parents[2]
ENV_LINE = "ENV NEXT_CACHE_HANDLER_PATH=/app/vpskit-cache-handler.cjs"


def plan(**overrides) -> tuple[dict, dict]:
    s = ctx(**overrides)
    files = dict(steps.build_files(s))
    return s, files


def test_the_shared_handler_is_built_in_and_named_to_next_for_the_build():
    s, files = plan()
    assert files["vpskit-cache-handler.cjs"] == (ROOT / "files" / "cache-handler.cjs").read_bytes()
    dockerfile = render("Dockerfile", **s)
    build_stage = dockerfile.split("FROM deps AS build", 1)[1].split("FROM ", 1)[0]
    assert ENV_LINE in build_stage
    assert ENV_LINE not in dockerfile.split("AS runtime", 1)[1]  # the standalone output names it; no runtime env


def test_no_shared_handler_with_page_cache_local_or_the_apps_own_handler():
    s, files = plan(page_cache="local")
    assert "vpskit-cache-handler.cjs" not in files and ENV_LINE not in render("Dockerfile", **s)
    own = dataclasses.replace(ctx()["app"], own_cache_handler=True)
    s, files = plan(info=own)
    assert "vpskit-cache-handler.cjs" not in files and ENV_LINE not in render("Dockerfile", **s)


def test_the_handler_shares_revalidations_through_the_apps_database_and_keeps_nexts_cache():
    source = (ROOT / "files" / "cache-handler.cjs").read_text()
    assert "extends FileSystemCache" in source  # Next's own cache: build-time pages and disk entries as before
    assert "process.env.DATABASE_URI || process.env.DATABASE_URL" in source
    assert "insert into vpskit_cache_tags" in source and "tagsManifest.set" in source
