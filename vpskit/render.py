"""Renders templates/ with jinja2 from validated settings. Pure: text in, text out."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import jinja2

from vpskit import body_limit
from vpskit.pgmajor import image_major
from vpskit.server.database import data_mount
from vpskit.settings import bundled_proxy

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def dotenv_quote(value: str) -> str:
    """Quotes a value for a Compose env_file: double quotes, with \\, ", $ escaped (no interpolation)."""
    if "\n" in value or "\r" in value:
        raise ValueError("a value for the server's .env cannot contain a line break")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - these are Dockerfiles, YAML and dotenv, not HTML
    )
    env.filters["dotenv_quote"] = dotenv_quote
    return env


def relative_import(route_dir: str, target: str) -> str:
    """The relative import of `target` (a path from the app's root, extension dropped) from `route_dir`."""
    stem = posixpath.splitext(target)[0]
    rel = posixpath.relpath(stem, route_dir)
    return rel if rel.startswith(".") else f"./{rel}"


def render(name: str, **context: Any) -> str:
    """Renders one template, e.g. render("docker-compose.yml", **settings, app_image="x:1")."""
    if "publish_port" in context and "bundled_proxy" not in context:
        context["bundled_proxy"] = bundled_proxy(context)
    context.setdefault("database_external", False)  # DATABASE_URL in .env (steps.plan sets it)
    context.setdefault("build_with_database", False)  # a throwaway PostgreSQL beside the build (steps.plan)
    context.setdefault("backup_server", context.get("role", "all") != "app")  # takes the backups (steps.plan)
    context.setdefault("shared_cache", False)  # vpskit's shared Next.js cache handler in the build (steps)
    context.setdefault("jobs_by_worker", False)  # vpskit's worker runs the app's Payload jobs (steps.plan)
    context.setdefault("health_start_interval", False)  # the Engine takes healthcheck.start_interval (steps.plan)
    if "postgres_image" in context:  # where the db volume goes: its place moved with PostgreSQL 18's images
        context.setdefault("db_data_mount", data_mount(image_major(context["postgres_image"])))
    if "max_body_size" in context and "max_body_bytes" not in context:  # the proxy's 413 above it
        app = context.get("app")
        context["max_body_bytes"] = body_limit.limit(context["max_body_size"], getattr(app, "upload_limit", 0))
        context["max_body_said"] = body_limit.said(context["max_body_bytes"])
        context["max_body_message"] = body_limit.message(context["max_body_bytes"])
    return _env().get_template(name).render(**context)
