"""Payload's jobs queue on a vpskit server: what the app asks of it, read from its sources, and what vpskit adds
to the build so one worker can run it (issue 27).

Payload 3 runs queued jobs (tasks, workflows, the scheduled publishing of `schedulePublish`) only when something
asks it to: `jobs.autoRun` in every process that serves, or `payload jobs:run` elsewhere. vpskit runs more than
one process of an app (two during every release, one per app server), so it asks exactly one place: the jobs
worker (vpskit/server/jobs.py) on one server asks that server's serving app container, one request at a time,
through a route vpskit adds to the build (templates/vpskit-jobs-route.ts). No second app server process (the
memory a 1 GB server does not have), and no job run twice: the worker never asks twice at once, and a release
stops the old container only once the worker's request to it has ended.

    jobs.of(config_text, sources)   # Jobs(uses="tasks or workflows in src/payload.config.ts", auto_run=False, ...)
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from vpskit.render import relative_import, render
from vpskit.settings import SettingsError

ROUTE = "api/vpskit-jobs"  # under the app's app/ folder: POST /api/vpskit-jobs
ROUTE_TEMPLATE = "vpskit-jobs-route.ts"
GATE = "VPSKIT_JOBS_WORKER"  # set in every container of an app whose jobs the worker runs; the app's autoRun reads it
_JOBS = re.compile(r"\bjobs\s*:\s*\{")
_LISTS = re.compile(r"\b(tasks|workflows)\b(?!\s*:\s*\[\s*\])")
_AUTO_RUN = re.compile(r"\bautoRun\s*:")
_SCHEDULE_PUBLISH = re.compile(r"\bschedulePublish\s*:\s*true\b")


@dataclass(frozen=True)
class Jobs:
    """What the app asks of Payload's jobs queue."""

    uses: str = ""  # what makes the app use the queue ("" = nothing: no worker)
    auto_run: bool = False  # its config runs jobs in every process that serves (jobs.autoRun)
    gated: bool = False  # ... unless GATE is set (the one change the docs ask of an app with autoRun)


def _block(text: str, start: int) -> str:
    """The text of the { ... } that opens at or after `start`."""
    opening = text.index("{", start)
    depth = 0
    for i in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[opening:i + 1]
    return text[opening:]


def of(config_text: str, sources: dict[str, str], config_name: str = "src/payload.config.ts") -> Jobs:
    """From the config's text (comments removed) and the app's other sources (path -> text, comments removed)."""
    uses, auto_run = "", False
    found = _JOBS.search(config_text)
    if found:
        block = _block(config_text, found.start())
        auto_run = bool(_AUTO_RUN.search(block))
        if _LISTS.search(block):
            uses = f"tasks or workflows in {config_name}"
    if not uses:
        where = next((p for p, t in sorted(sources.items()) if _SCHEDULE_PUBLISH.search(t)), "")
        uses = f"scheduled publishing (schedulePublish) in {where}" if where else ""
    return Jobs(uses, auto_run, GATE in config_text)


def check(jobs: Jobs, worker: str, config_name: str) -> None:
    """Refuses an app that would run its jobs in every app container as well as in vpskit's worker."""
    if worker == "auto" and jobs.uses and jobs.auto_run and not jobs.gated:
        raise SettingsError(
            f"{config_name} runs Payload's jobs in every app container (jobs.autoRun), and vpskit runs them in one "
            f"worker: make autoRun read {GATE}, e.g. `autoRun: process.env.{GATE} ? [] : [{{ cron: '* * * * *' }}]` "
            "(docs/DOCKER-DEPLOYMENT.md, \"Running Payload on several instances\"), or set jobs_worker = \"off\"")


def worker_wanted(jobs: Jobs, setting: str) -> bool:
    """The app's jobs are run by vpskit's worker (and not by its app containers)."""
    return bool(jobs.uses) and setting == "auto"


def route(app_dir: str, config: str) -> tuple[str, str]:
    """(its path from the app's root, its source) of the route the worker asks to run the due jobs."""
    route_dir = posixpath.join(app_dir, ROUTE)
    path = f"{route_dir}/route.ts"
    return path, render(ROUTE_TEMPLATE, route=path, config=relative_import(route_dir, config))


def build_files(app_dir: str, config: str, wanted: bool) -> tuple[tuple[str, bytes], ...]:
    """The route, added to the build when vpskit's worker runs the app's jobs."""
    if not wanted:
        return ()
    path, source = route(app_dir, config)
    return ((path, source.encode()),)


def read(app_path: Path, config: Path, code) -> Jobs:
    """Jobs.of for an app on disk; `code` strips comments (app_info._code)."""
    src = app_path / "src" if (app_path / "src").is_dir() else app_path
    sources = {}
    for path in sorted(src.rglob("*")):
        if path.suffix in (".ts", ".tsx", ".js", ".mjs") and "node_modules" not in path.parts and path.is_file():
            text = path.read_text(errors="replace")
            if "schedulePublish" in text:
                sources[path.relative_to(app_path).as_posix()] = code(text)
    try:
        name = config.resolve().relative_to(app_path.resolve()).as_posix()
    except ValueError:
        name = config.name
    return of(code(config.read_text()), sources, name)
