"""The release transaction of the server program (vpskit/server/release.py), run against a recorded Docker world
(tests/unit/server_fakes.py) in milliseconds: each failure point (before the switch, at the switch, after it,
the lock held, a runner that records nothing, the client gone, the process killed) leaves what the brief says
it must: the previous version serving, its files in place, and one true line in the release log."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.server_fakes import FakeEffects, World
from vpskit.server import history
from vpskit.server.proxy import Proxy
from vpskit.server.release import Layout, Releases, Run, follow_limit, snapshot
from vpskit.server.state import AttemptParams, Status, read_json, write_json

ROUTE = "example.test {\n  reverse_proxy @UPSTREAM@\n}\n"
HEADER = "# vpskit operator keys: PAYLOAD_SECRET\n# vpskit secret keys: PAYLOAD_SECRET\n"


def compose(version: str, db: str = "a") -> str:
    return (f"services:\n  app:\n    image: example:{version}\n  db:\n    image: postgres:17\n"
            f"    labels:\n      db-config: {db}\n")


def serving(tmp_path: Path, world: World | None = None) -> tuple[Path, World]:
    """An app folder with release 1 (v1) serving in container example-app-1, the proxy routed to it."""
    app = tmp_path / "example"
    (app / "releases" / "attempts").mkdir(parents=True)
    (app / "next").mkdir()
    files = {"docker-compose.yml": compose("v1"), ".env": HEADER + "PAYLOAD_SECRET=one\n", "proxy-route.caddy": ROUTE}
    for name, text in files.items():
        (app / name).write_text(text)
        (app / "releases" / f"1.{ {'docker-compose.yml': 'yml', '.env': 'env', 'proxy-route.caddy': 'caddy'}[name]}"
         ).write_text(text)
    (app / "releases" / "index").write_text(history.Entry(1, "v1", "aaaaaaaaaaaa", None, "2026-12-01T00:00:00Z").line())
    (app / "current").write_text("1\n")
    (app / "releases" / ".serving").write_text("example-app-1\n")
    (app / ".applied").write_text(history.dir_hash(app) + "\n")
    w = world or World()
    w.app_dir = app
    w.add("app", health="healthy")
    db = w.add("db")
    db.config = "a"  # type: ignore[attr-defined]
    w.images = ["example:v1", "example:v0"]
    sites = tmp_path / "proxy" / "etc" / "sites"
    sites.mkdir(parents=True)
    (sites / "example.caddy").write_text(ROUTE.replace("@UPSTREAM@", "example-app-1:3000"))
    return app, w


def attempt(app: Path, version: str = "v2", db: str = "a", route: str = ROUTE, **params) -> str:
    """The files of `version` pushed to next/ and snapshotted as attempt A1 (what `release start` does)."""
    (app / "next" / "docker-compose.yml").write_text(compose(version, db))
    (app / "next" / ".env").write_text(HEADER + "PAYLOAD_SECRET=one\n")
    (app / "next" / "proxy-route.caddy").write_text(route)
    d = snapshot(Layout(app), "A1", app / "next" / "docker-compose.yml", app / "next" / ".env",
                 app / "next" / "proxy-route.caddy")
    p = AttemptParams(version=version, files_hash=history.dir_hash(d), who="ann on laptop", timeout=20, drain=2,
                      lock_wait=5, **params)
    write_json(Layout(app).params("A1"), p.to_json())
    return "A1"


def release(app: Path, w: World) -> int:
    return Run(app, "A1", FakeEffects(w), proxy=Proxy(FakeEffects(w), app.parent / "proxy"),
               notify=app / "bin" / "none").main()


def route(app: Path) -> str:
    return (app.parent / "proxy" / "etc" / "sites" / "example.caddy").read_text()


def last_log(app: Path) -> history.LogLine:
    return history.LogLine.parse((app / "releases" / "log").read_text().splitlines()[-1])


def previous_serving(app: Path, w: World) -> None:
    """What every failure before the switch must leave: v1's container running and routed to, v1's files in
    place, release 1 current, no other app container, and the attempt's folder gone."""
    assert [(c.name, c.status) for c in w.of("app")] == [("example-app-1", "running")]
    assert "example-app-1:3000" in route(app)
    assert (app / "docker-compose.yml").read_text() == compose("v1")
    assert (app / "current").read_text() == "1\n"
    assert history.dir_hash(app) == (app / ".applied").read_text().strip()
    assert not Layout(app).attempt_dir("A1").exists()
    assert Status.read(Layout(app).status("A1")).code == 1


def test_a_release_switches_to_the_new_container_and_records_it(tmp_path):
    app, w = serving(tmp_path)
    attempt(app)
    assert release(app, w) == 0
    assert [(c.name, c.status) for c in w.of("app")] == [("example-app-2", "running")]  # the old one drained, gone
    assert "example-app-2:3000" in route(app)
    assert (app / "releases" / ".serving").read_text().strip() == "example-app-2"
    assert (app / "current").read_text() == "2\n"
    entries = history.parse_index((app / "releases" / "index").read_text())
    assert [(e.number, e.version, e.came_after) for e in entries] == [(1, "v1", None), (2, "v2", 1)]
    assert (app / ".applied").read_text().strip() == history.dir_hash(app)  # the next deploy: no change
    assert last_log(app).result == "release:ok" and last_log(app).who == "ann on laptop"
    assert Status.read(Layout(app).status("A1")) == Status(0, "")
    assert w.images == ["example:v1"]  # v0 is no kept release's version: pruned
    assert any("version v2 is serving as release 2" in s for s in w.said)


def test_before_the_switch_a_new_container_that_never_gets_ready_is_thrown_away(tmp_path):
    app, w = serving(tmp_path, World(new_app_ready=False))
    attempt(app)
    assert release(app, w) == 1
    previous_serving(app, w)
    reason = last_log(app).reason
    assert "did not answer ready within 20s" in reason and "v1 keeps serving (container example-app-1" in reason
    assert w.time >= 20  # it waited its timeout, no more than a few seconds beyond
    assert w.time < 30


def test_before_the_switch_a_container_that_exits_ends_the_wait_at_once(tmp_path):
    app, w = serving(tmp_path, World(new_app_ready=False, new_app_status="exited"))
    attempt(app)
    assert release(app, w) == 1
    previous_serving(app, w)
    assert "exited with code 0 after 0s" in last_log(app).reason and w.time < 5


def test_at_the_switch_a_route_the_proxy_refuses_leaves_the_old_route_and_container(tmp_path):
    app, w = serving(tmp_path, World(reload_ok=False))
    attempt(app)
    assert release(app, w) == 1
    previous_serving(app, w)
    assert "the proxy refused the new route" in last_log(app).reason


def test_after_the_switch_a_failure_says_the_new_version_serves_and_the_next_deploy_records_it(tmp_path):
    app, w = serving(tmp_path, World(fail_on="docker stop"))
    attempt(app)
    assert release(app, w) == 1
    assert "example-app-2:3000" in route(app)  # switched: no undo after this point
    assert (app / "releases" / ".serving").read_text().strip() == "example-app-2"
    assert "version v2 serves (container example-app-2)" in last_log(app).reason
    assert "run the deploy again to record it" in last_log(app).reason
    # Not recorded: the files in place differ from the last release, so the next deploy releases again.
    assert (app / "current").read_text() == "1\n"
    assert history.dir_hash(app) != (app / ".applied").read_text().strip()
    # ... and that release keeps the container serving now and removes the one left over.
    w.fail_on = ""
    attempt(app)
    assert release(app, w) == 0
    assert [c.name for c in w.of("app")] == ["example-app-3"] and (app / "current").read_text() == "2\n"


def test_behind_an_external_proxy_the_app_is_asked_itself_and_the_old_one_stops_once_docker_says_healthy(tmp_path):
    app, w = serving(tmp_path)
    attempt(app, route="")  # Traefik's Docker provider routes by labels: no route of vpskit's
    assert release(app, w) == 0
    assert not [c for c in w.calls if c[:3] == ("docker", "exec", "vpskit-proxy")]  # never through the proxy
    assert ("docker", "exec", "example-app-2", "node", "-e") == w.calls[[c[:3] for c in w.calls].index(
        ("docker", "exec", "example-app-2"))][:5]
    assert [c.name for c in w.of("app")] == ["example-app-2"]
    stop = w.calls.index(("docker", "stop", "-t", "30", "example-app-1"))
    assert any(c[:2] == ("docker", "inspect") and "Health" in c[3] for c in w.calls[:stop])


def test_a_held_lock_ends_the_attempt_with_nothing_changed(tmp_path):
    app, w = serving(tmp_path)
    attempt(app)
    fd = os.open(app / ".vpskit.lock", os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    (app / ".vpskit.lock.holder").write_text("restore of 20261201T000000Z by bob, since now\n")
    try:
        assert release(app, w) == 1
    finally:
        os.close(fd)
    previous_serving(app, w)
    assert "still holds its lock after 5s (restore of 20261201T000000Z by bob" in last_log(app).reason
    assert not [c for c in w.calls if c[:3] == ("docker", "compose", "up")]


def test_a_runner_that_records_nothing_runs_twice_then_ends_the_release_before_any_container(tmp_path):
    app, w = serving(tmp_path, World(applied=["m1"]))
    attempt(app, migrate=("m2",))
    assert release(app, w) == 1
    previous_serving(app, w)
    assert len([c for c in w.calls if c[2:5] == ("run", "-d", "migrate")]) == 2
    assert "ended twice (exit 0) without recording m2" in last_log(app).reason


def test_a_failed_migration_ends_the_release_and_says_which(tmp_path):
    app, w = serving(tmp_path, World(runner_output="Error running migration m2: column exists", runner_status=0))
    attempt(app, migrate=("m2",))
    assert release(app, w) == 1
    previous_serving(app, w)
    assert last_log(app).reason.startswith("migration m2 failed (Payload's output above; exit 0)")


def test_applied_migrations_are_recorded_with_the_release(tmp_path):
    app, w = serving(tmp_path, World(applied=["m1"], runner_applies=("m2",)))
    attempt(app, migrate=("m2",))
    assert release(app, w) == 0
    assert (app / "releases" / "2.migrations").read_text() == "m2\n"


def test_a_database_that_cannot_start_on_new_settings_is_started_again_on_the_previous_ones(tmp_path):
    app, w = serving(tmp_path, World(db_starts=False))
    attempt(app, db="b")

    fx = FakeEffects(w)
    orig = fx.compose
    # The previous settings start again: the db starts whenever the compose file in place has them.
    fx.compose = lambda a: (setattr(w, "db_starts", fx.db_config_in_place() == "a"), orig(a))[1]
    code = Run(app, "A1", fx, proxy=Proxy(fx, app.parent / "proxy"), notify=app / "bin" / "none").main()
    assert code == 1
    previous_serving(app, w)
    reason = last_log(app).reason
    assert reason.startswith("the database did not become healthy") and "back on its previous settings" in reason


def test_a_rollback_is_the_kept_release_again_with_todays_secrets(tmp_path):
    app, w = serving(tmp_path)
    attempt(app)
    assert release(app, w) == 0
    (app / ".env").write_text(HEADER + "PAYLOAD_SECRET=rotated\n")  # rotated since release 1
    lay = Layout(app)
    env = history.with_current_secrets((app / "releases" / "1.env").read_text(), (app / ".env").read_text())
    d = snapshot(lay, "A1", app / "releases" / "1.yml", env, app / "releases" / "1.caddy")
    p = AttemptParams(version="v1", files_hash=history.dir_hash(d), who="ann", kind="rollback", release=1,
                      from_version="v2", timeout=20, drain=1, lock_wait=5)
    write_json(lay.params("A1"), p.to_json())
    assert release(app, w) == 0
    assert (app / "current").read_text() == "1\n" and "PAYLOAD_SECRET=rotated" in (app / ".env").read_text()
    assert "one" not in (app / "releases" / "1.env").read_text().split("PAYLOAD_SECRET=")[1]
    assert [e.number for e in history.parse_index((app / "releases" / "index").read_text())] == [1, 2]
    assert last_log(app).result == "rollback:ok"


def test_kept_releases_beyond_keep_go_with_their_files_but_never_the_serving_one(tmp_path):
    app, w = serving(tmp_path)
    for v in ("v2", "v3", "v4"):
        attempt(app, v, keep=2)
        w.images.append(f"example:{v}")
        assert release(app, w) == 0
    entries = history.parse_index((app / "releases" / "index").read_text())
    assert [e.number for e in entries] == [3, 4]
    assert not (app / "releases" / "1.yml").exists() and not (app / "releases" / "2.env").exists()
    assert sorted(w.images) == ["example:v3", "example:v4"]
    assert history.kept_numbers([1, 2, 3, 4], 2, 1) == {1, 3, 4}  # a rollback to 1 keeps it


# --- start and follow: the client's side


def releases(app: Path, w: World) -> Releases:
    return Releases(app, FakeEffects(w), Path("/nonexistent/vpskit-server"))


def test_start_refuses_files_replaced_by_another_deploy_naming_its_version(tmp_path):
    app, w = serving(tmp_path)
    attempt(app)
    (app / "next" / "docker-compose.yml").write_text(compose("v9"))  # another deploy pushed after this one
    p = AttemptParams(version="v2", files_hash="f" * 64, who="ann")
    assert releases(app, w).start("A2", p) == 1
    assert any("replaced on the server by another deploy (version v9) before" in s for s in w.said)
    (app / "next" / "origin").write_text("v9\tbob on ci\n")
    assert releases(app, w).start("A2", p) == 1
    assert "another deploy (version v9 by bob on ci) before this release began: nothing was changed" in w.said[-1]
    assert not Layout(app).attempt_dir("A2").exists() and (app / "docker-compose.yml").read_text() == compose("v1")


def test_follow_reports_the_attempts_status_and_its_whole_log(tmp_path):
    app, w = serving(tmp_path)
    lay = Layout(app)
    lay.attempt_log("A2").write_text("one\ntwo\n")
    Status(0).write(lay.status("A2"))
    assert releases(app, w).follow("A2") == 0 and w.said == ["one\ntwo"]


def test_follow_records_an_attempt_whose_process_was_killed(tmp_path):
    """kill -9 of the release process at any step: no status; the client records it as failed in seconds."""
    app, w = serving(tmp_path)
    lay = Layout(app)
    attempt(app)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (lay.attempts / "A1.pid").write_text(f"{gone.pid}\n")
    lay.attempt_log("A1").write_text("vpskit release: started example-app-2\n")
    assert releases(app, w).follow("A1") == 1
    assert w.time < 5
    assert "started example-app-2" in w.said[0]
    line = last_log(app)
    assert (line.version, line.who, line.result) == ("v2", "ann on laptop", "release:failed")
    assert "ended without a result" in Status.read(lay.status("A1")).reason


def test_the_client_going_away_stops_only_the_following(tmp_path):
    app, w = serving(tmp_path)
    lay = Layout(app)
    running = subprocess.Popen(["sleep", "30"])
    try:
        (lay.attempts / "A3.pid").write_text(f"{running.pid}\n")
        assert releases(app, w).follow("A3", 3) == 1
        assert running.poll() is None  # the release goes on
    finally:
        running.kill()
    assert any("still running on the server after 3s: stopped following it" in s for s in w.said)
    assert not lay.status("A3").exists()


def test_a_status_is_never_read_half_written(tmp_path):
    path = tmp_path / "s.json"
    Status(1, "why").write(path)
    assert not (tmp_path / "s.json.new").exists() and Status.read(path) == Status(1, "why")
    (tmp_path / "t.json").write_text("")  # a reader racing a writer that does not rename would see this
    with pytest.raises(ValueError):
        read_json(tmp_path / "t.json")


def test_follow_limit_covers_every_bounded_wait():
    assert follow_limit(300, 180, 10) == 300 + 4 * 180 + 10 + 1800
