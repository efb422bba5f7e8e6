"""Payload's jobs queue (issue 27): which apps get vpskit's one worker, what is refused, and the worker's own
decisions (one request at a time under a lock that whatever stops the app's container takes first)."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tests.unit.server_fakes import FakeEffects, World
from tests.unit.test_render import ctx
from vpskit import app_check, jobs, steps
from vpskit.render import render
from vpskit.server import jobs as worker
from vpskit.server.effects import Result
from vpskit.server.proxy import Proxy, route_text
from vpskit.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "export default buildConfig({{\n  collections: [Pages],\n  {jobs}\n  db: postgresAdapter({{}}),\n}})"


@pytest.mark.parametrize(("jobs_block", "sources", "uses"), [
    ("jobs: { tasks: [publishPost] },", {}, "tasks or workflows in src/payload.config.ts"),
    ("jobs: {\n    tasks,\n  },", {}, "tasks or workflows in src/payload.config.ts"),  # shorthand
    ("jobs: { workflows: [onboarding], tasks: [] },", {}, "tasks or workflows in src/payload.config.ts"),
    # Payload's website template: an empty task list, and scheduled publishing in its collections
    ("jobs: { access: { run: () => true }, tasks: [] },",
     {"src/collections/Pages/index.ts": "versions: { drafts: { autosave: true, schedulePublish: true } }"},
     "scheduled publishing (schedulePublish) in src/collections/Pages/index.ts"),
    ("jobs: { tasks: [] },", {}, ""),
    ("", {}, ""),
    ("", {"src/collections/Posts.ts": "versions: { drafts: { schedulePublish: false } }"}, ""),
])
def test_an_app_uses_the_queue_when_it_has_tasks_workflows_or_scheduled_publishing(jobs_block, sources, uses):
    assert jobs.of(CONFIG.format(jobs=jobs_block), sources).uses == uses


def test_the_example_queues_a_task_and_gets_the_worker_and_its_route():
    info = app_check.check(ROOT / "example")
    assert info.jobs == jobs.Jobs("tasks or workflows in src/payload.config.ts", auto_run=False, gated=False)
    [(path, built)] = jobs.build_files(info.app_dir, info.config, True)
    source = built.decode()
    assert path == "src/app/api/vpskit-jobs/route.ts"
    assert "import config from '../../../payload.config'" in source
    assert "payload.jobs.run({ allQueues: true" in source and "handleSchedules({ allQueues: true })" in source
    assert jobs.build_files(info.app_dir, info.config, False) == ()


def test_an_app_whose_autorun_runs_jobs_in_every_container_is_refused_with_the_fix():
    ungated = jobs.of(CONFIG.format(jobs="jobs: { autoRun: [{ cron: '* * * * *' }], tasks: [t] },"), {})
    assert ungated.auto_run and not ungated.gated
    with pytest.raises(SettingsError) as refused:
        jobs.check(ungated, "auto", "src/payload.config.ts")
    line = str(refused.value)
    assert "\n" not in line
    assert "src/payload.config.ts runs Payload's jobs in every app container (jobs.autoRun)" in line
    assert "autoRun: process.env.VPSKIT_JOBS_WORKER ? [] :" in line and 'jobs_worker = "off"' in line
    jobs.check(ungated, "off", "src/payload.config.ts")  # the app runs its own jobs: its choice
    gated = jobs.of(CONFIG.format(jobs="jobs: { autoRun: process.env.VPSKIT_JOBS_WORKER ? [] : [{}], tasks: [t] },"),
                    {})
    jobs.check(gated, "auto", "src/payload.config.ts")


def test_the_app_containers_are_told_the_worker_runs_the_jobs():
    app = yaml.safe_load(render("docker-compose.yml", **ctx(), jobs_by_worker=True))["services"]["app"]
    assert app["environment"]["VPSKIT_JOBS_WORKER"] == "1"
    plain = yaml.safe_load(render("docker-compose.yml", **ctx()))["services"]["app"]
    assert "VPSKIT_JOBS_WORKER" not in plain["environment"]


def test_the_worker_unit_runs_the_server_program_and_holds_no_secret():
    s = {"app_name": "shop", "app_dir": "/opt/shop", "jobs_interval": 10, "jobs_worker_here": True}
    [(name, text)] = steps.worker_units(s).items()
    assert name == "vpskit-jobs-shop.service"
    assert "ExecStart=/opt/shop/bin/vpskit-server jobs run --app-dir /opt/shop --interval 10\n" in text
    assert "Restart=always" in text and "SECRET" not in text and "Environment" not in text
    assert steps.worker_units({**s, "jobs_worker_here": False}) == {}


def test_the_token_is_the_routes_hmac_of_payload_secret():
    # node -e "console.log(require('crypto').createHmac('sha256','s3cret').update('vpskit-jobs').digest('hex'))"
    assert worker.token("s3cret") == "df9e23f9a506563727055ca2382abb7a9d174572e8fd5b3290e0133a5c043726"
    assert worker.unquote(r"a\"b\\c\$d") == 'a"b\\c$d'


@pytest.mark.parametrize(("status", "body", "ok", "said"), [
    (200, json.dumps({"enabled": True, "ran": 2, "failed": 1, "queued": 0, "waiting": 3,
                      "oldest": "2026-12-07T10:00:00.000Z"}),
     True, "T: ran 2 job(s), 1 failed; 3 waiting (oldest since 2026-12-07T10:00:00.000Z)"),
    (200, json.dumps({"enabled": True, "ran": 0, "queued": 1, "waiting": 0}), True,
     "T: ran 0 job(s); queued 1 from schedules; 0 waiting"),
    (200, json.dumps({"enabled": False}), True, "jobs are not enabled in the app's config"),
    (404, "Not Found", False, "could not ask the app at T: /api/vpskit-jobs answered 404 (an image built without "
                              "vpskit's jobs route?)"),
    (500, "", False, "could not ask the app at T: /api/vpskit-jobs answered 500"),
])
def test_a_round_says_what_the_app_did(status, body, ok, said):
    r = worker.Round.of_answer("T", status, body)
    assert r.ok is ok and r.said() == said


def test_only_rounds_that_did_something_or_changed_are_said():
    quiet = worker.Round("T", True)
    assert quiet.worth_saying(None)
    assert not quiet.worth_saying(worker.Round("S", True))
    assert worker.Round("T", True, ran=1).worth_saying(quiet)
    assert worker.Round("T", False, error="no answer").worth_saying(quiet)
    assert not worker.Round("T", False, error="no answer").worth_saying(worker.Round("S", False, error="no answer"))


class Asked(worker.Worker):
    """The worker with the HTTP request recorded instead of made."""

    def __init__(self, app_dir: Path, world: World, answer=(200, '{"enabled": true, "ran": 1, "waiting": 0}')):
        fx = FakeEffects(world)
        super().__init__(app_dir, fx, 10, Proxy(fx, app_dir / "proxy"))
        self.answer, self.asked = answer, []

    def ask(self, url, secret):
        self.asked.append((url, secret))
        return self.answer


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / ".serving").write_text("shop-app-2\n")
    (tmp_path / ".env").write_text('PORT="3000"\nPAYLOAD_SECRET="pa\\$\\"ss"\n')
    return tmp_path


def test_a_round_asks_the_serving_container_and_records_what_it_did(app_dir, monkeypatch):
    w = World()
    fx = FakeEffects(w)
    monkeypatch.setattr(fx, "run", lambda *a, **k: Result(0, "172.18.0.5 \nPATH=/usr/bin\nPORT=3000\n"))
    a = Asked(app_dir, w)
    a.fx = fx
    r = a.round()
    assert a.asked == [("http://172.18.0.5:3000", 'pa$"ss')]
    assert r is not None and r.ok and r.ran == 1
    a.record(r)
    assert worker.read_state(app_dir) == r
    assert any("ran 1 job(s)" in line for line in w.said)


def test_no_round_while_a_release_or_restore_holds_the_lock_the_site_is_closed_or_nothing_serves(app_dir):
    w = World()
    a = Asked(app_dir, w)
    fd = os.open(app_dir / worker.LOCK, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert a.round() is None and a.asked == []
    finally:
        os.close(fd)
    site = a.proxy.site(app_dir.name)  # closed for maintenance (its route answers the page): jobs wait
    site.parent.mkdir(parents=True)
    site.write_text(route_text(":80 {\n\treverse_proxy @UPSTREAM@\n}\n", "shop-app-2:3000", app_dir.name))
    assert a.round() is None and a.asked == []
    site.unlink()
    (app_dir / "releases" / ".serving").unlink()
    assert a.round() is None and a.asked == []


def test_stopping_the_app_waits_for_the_workers_request_and_says_so(app_dir):
    w = World()
    fx = FakeEffects(w)
    with worker.quiet(app_dir, fx, 30, "stopping shop-app-1") as held:  # no worker here: no lock file, no wait
        assert held
    fd = os.open(app_dir / worker.LOCK, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the worker's request in flight, for longer than the wait
    try:
        with worker.quiet(app_dir, fx, 30, "stopping shop-app-1") as held:
            assert not held
    finally:
        os.close(fd)
    assert w.time >= 30
    assert "vpskit: waiting for the jobs running in the app to finish before stopping shop-app-1 (0s of 30s)" in w.said
    assert w.said[-1].startswith("vpskit: the jobs worker's request (jobs running in the app) still runs after 30s")
    with worker.quiet(app_dir, fx, 30, "stopping shop-app-1") as held:  # free: held at once
        assert held


NOW = dt.datetime(2026, 12, 7, 12, 0, 0, tzinfo=dt.UTC)
REFUSED = "no answer from shop-app-2 (refused)"


@pytest.mark.parametrize(("active", "last", "kind", "detail"), [
    ("inactive", None, "FAIL", "the worker (vpskit-jobs-shop) is inactive: queued jobs wait"),
    ("active", None, "warn", "the worker runs but has not asked the app yet"),
    # One or two failed rounds while the app restarts (an OOM kill): a warning; a minute of them: a failure.
    ("active", worker.Round("2026-12-07T11:59:55Z", False, error=REFUSED, since="2026-12-07T11:59:45Z"), "warn",
     f"the worker could not ask the app at 2026-12-07T11:59:55Z: {REFUSED} (its rounds have failed for 15s)"),
    ("active", worker.Round("2026-12-07T11:59:55Z", False, error=REFUSED, since="2026-12-07T11:58:00Z"), "FAIL",
     f"the worker could not ask the app at 2026-12-07T11:59:55Z: {REFUSED} (its rounds have failed for 120s)"),
    ("active", worker.Round("T", True, ran=0, waiting=2, oldest="O"), "ok",
     "the worker's last round T: ran 0 job(s); 2 waiting (oldest since O)"),
])
def test_health_reports_the_worker_and_the_oldest_waiting_job(active, last, kind, detail):
    got_kind, got = worker.health(active, last, "shop", NOW)
    assert (got_kind, got[:len(detail)]) == (kind, detail)


def test_failed_rounds_remember_when_they_began_and_a_restarting_container_has_no_address(app_dir, monkeypatch):
    w = World()
    a = Asked(app_dir, w)
    # docker inspect of a container that restarts: no address on its networks (its env lines follow).
    monkeypatch.setattr(a.fx, "run", lambda *args, **kw: Result(0, " \nPATH=/usr/bin\nPORT=3000\n"))
    first = a.round()
    assert first is not None and not first.ok and "has no address" in first.error and a.asked == []
    a.record(first)
    second = replace(first, at="2026-12-07T23:59:59Z")
    a.record(second)
    assert worker.read_state(app_dir).since == first.at  # the streak's start, kept
    a.record(worker.Round("2026-12-08T00:00:09Z", True))
    a.record(replace(first, at="2026-12-08T00:00:19Z"))
    assert worker.read_state(app_dir).since == "2026-12-08T00:00:19Z"  # a new streak after a good round


def test_a_deploy_that_changes_the_workers_program_ends_it_between_two_rounds(app_dir):
    w = World()
    program = app_dir / "jobs.py"
    program.write_text("v1")
    a = Asked(app_dir, w)
    a.watched = [program]
    a.started = a.snapshot()
    rounds = []

    def deployed_meanwhile():  # a deploy replaces the program while a round runs
        rounds.append(1)
        os.utime(program, (1, 1))

    a.round = deployed_meanwhile
    assert a.run() == 0 and len(rounds) == 1  # no second round with the old program
    assert w.said[-1].startswith("vpskit jobs: its program or unit changed (a deploy): ending")
