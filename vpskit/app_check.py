"""Checks, before any server is touched, that the app at app_path can be deployed by this kit."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from vpskit import app_info
from vpskit.app_info import AppInfo
from vpskit.settings import SettingsError

STANDALONE = re.compile(r"""output\s*:\s*['"]standalone['"]""")
HEALTH_ROUTES = {"api/health": "liveness route /api/health", "api/health/ready": "readiness route /api/health/ready"}


def _first(paths):
    return next((p for p in paths if p.exists()), None)


def check(app_path: Path, package_manager: str = "") -> AppInfo:
    """What vpskit needs to know about the app; raises SettingsError naming the first thing missing and how
    to add it."""
    if not app_path.is_dir():
        raise SettingsError(f"app_path={app_path}: no such directory; set app_path to your Next.js + Payload app")
    if not (app_path / "package.json").exists():
        raise SettingsError(f"{app_path}/package.json is missing: app_path must point at the app's root folder")
    app_info.package_manager(app_path, package_manager)  # the lock file: the first thing a build reads
    config = _first(app_path / f"next.config.{ext}" for ext in ("mjs", "js", "ts", "cjs", "mts"))
    if config is None:
        raise SettingsError(f"{app_path} has no next.config.(ts|mjs|js): is app_path a Next.js app?")
    if not STANDALONE.search(config.read_text()):
        raise SettingsError(f"{config} does not set output: 'standalone': add it to the config passed to "
                            "withPayload (the image runs .next/standalone/server.js)")
    payload = _first(app_path / d / f"payload.config.{ext}" for d in ("src", ".") for ext in ("ts", "js", "mjs"))
    if payload is None:
        raise SettingsError(f"{app_path} has no payload.config.ts (in src/ or the root): is this a Payload 3 app?")
    if "@payloadcms/db-postgres" not in payload.read_text():
        raise SettingsError(f"{payload} does not use @payloadcms/db-postgres: vpskit deploys Payload on "
                            "PostgreSQL; switch the db adapter to postgresAdapter")
    app_dir = _first([app_path / "src" / "app", app_path / "app"])
    for route, what in HEALTH_ROUTES.items():
        if app_dir is None or _first(app_dir / route / f"route.{ext}" for ext in ("ts", "js", "tsx")) is None:
            target = (app_dir or app_path / "src" / "app").relative_to(app_path) / "api"
            raise SettingsError(f"{app_path} has no {what}: copy vpskit's folder files/app/api/health (both routes, "
                                f"health/route.ts and health/ready/route.ts) into {target}/, e.g. "
                                f"mkdir -p {app_path}/{target} && cp -r files/app/api/health {app_path}/{target}/")
    info = app_info.inspect(app_path, payload, package_manager, app_dir)
    if app_info.CACHE_HANDLER.search(app_info._code(config.read_text())):  # the app's own: vpskit's is not added
        info = dataclasses.replace(info, own_cache_handler=True)
    if not info.migrations:
        # Payload pushes the schema only in development: in production an app without migrations has no tables,
        # and its site fails (relation "..." does not exist) while every health check passes.
        raise SettingsError(f"{app_path} has no Payload migrations, so production would get no tables: create the "
                            f"first one in the app ({info.package_manager.run('payload migrate:create initial')}, "
                            "with its database reachable as in development), commit its migrations folder, deploy "
                            "again (TROUBLESHOOTING 52)")
    if info.migrated_by_vpskit:  # the route vpskit adds to the build imports the list Payload keeps in index.ts
        folder = app_path / info.migrations_dir if info.migrations_dir else None
        if folder is None or _first(folder / f"index.{ext}" for ext in ("ts", "js")) is None:
            raise SettingsError(f"{app_path}: the migrations folder has no index.ts (Payload writes it, listing every "
                                "migration, with each migrate:create): run "
                                f"{info.package_manager.run('payload migrate:create')} in the app, or write it, "
                                "inside the app's folder (TROUBLESHOOTING 52)")
    return info
