"""The migration runner: how a release applies an app's Payload migrations before the new version gets traffic,
when the app does not apply them itself (no `prodMigrations`).

The runner is the new version's own image, run once as the compose service `migrate`: vpskit adds one route
to the build (ROUTE under the app's app/ folder, rendered from templates/vpskit-migrate-route.ts with the app's
own config and migrations list), and files/migrate.js, in every image, starts the app's server on 127.0.0.1
and asks that route, with a token only that run knows, to apply them. Nothing but the app image reaches the
server for a release with migrations (a runner of its own was the whole dependency tree, 219 MB, issue 24).

    migrate_runner.build_files(info)   # (("vpskit-migrate.js", ...), ("src/app/api/vpskit-migrate/route.ts", ...))
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from vpskit.app_info import AppInfo
from vpskit.render import relative_import, render

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "files" / "migrate.js"
DRIVER_IN_CONTEXT = "vpskit-migrate.js"  # the Dockerfile copies it to /usr/local/bin
ROUTE = "api/vpskit-migrate"  # under the app's app/ folder: POST /api/vpskit-migrate
ROUTE_TEMPLATE = "vpskit-migrate-route.ts"


def route(info: AppInfo) -> tuple[str, str]:
    """(its path from the app's root, its source) of the route that applies the app's migrations."""
    route_dir = posixpath.join(info.app_dir, ROUTE)
    path = f"{route_dir}/route.ts"
    source = render(ROUTE_TEMPLATE, route=path, config=relative_import(route_dir, info.config),
                    migrations=relative_import(route_dir, f"{info.migrations_dir}/index"))
    return path, source


def build_files(info: AppInfo) -> tuple[tuple[str, bytes], ...]:
    """The files vpskit adds to the app's build context: the runner (always; the Dockerfile copies it) and, when
    vpskit applies the app's migrations, the route it asks."""
    files = [(DRIVER_IN_CONTEXT, DRIVER.read_bytes())]
    if info.migrated_by_vpskit:
        path, source = route(info)
        files.append((path, source.encode()))
    return tuple(files)
