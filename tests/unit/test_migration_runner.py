"""The release's one run of the migration runner (vpskit/server/database.py run_migrations) against recorded
docker answers (review item 14): a runner that compose cannot even create reports compose's exit status and
its message (the shell version once reported exit 0), and a runner that ran reports its own status and output."""

from __future__ import annotations

from pathlib import Path

from tests.unit.server_fakes import FakeEffects, World
from vpskit.server.database import Database
from vpskit.server.docker import Docker
from vpskit.server.effects import Result


def database(tmp_path: Path, w: World, fx: FakeEffects) -> Database:
    (tmp_path / ".env").write_text("POSTGRES_USER=app\n")
    return Database(Docker(fx), tmp_path)


def test_a_runner_compose_cannot_create_reports_its_status_and_message(tmp_path):
    w = World()
    fx = FakeEffects(w)
    fx.compose = lambda a: Result(18, "", "no such image: example:v2\n") if a[:2] == ["run", "-d"] else Result(0)
    status, output = database(tmp_path, w, fx).run_migrations()
    assert status == 18 and "no such image: example:v2" in output
    assert any("no such image" in s for s in w.said)


def test_a_runner_that_ran_reports_its_own_exit_status_and_output(tmp_path):
    w = World(runner_output="Migrated: 20261129_000000_initial", runner_status=3)
    fx = FakeEffects(w)
    status, output = database(tmp_path, w, fx).run_migrations()
    assert status == 3 and "Migrated: 20261129_000000_initial" in output
    assert ("docker", "rm", "-f", "runner1") in w.calls  # the one-shot container goes


def test_an_external_database_is_read_through_the_client_container(tmp_path):
    w = World(applied=["m1", "m2"])
    fx = FakeEffects(w)
    db = database(tmp_path, w, fx)
    assert db.applied_migrations() == ["m1", "m2"]
    (tmp_path / ".env").write_text("PGHOST=db.example.com\n")
    db.applied_migrations()
    assert w.calls[-1][2:7] == ("run", "--rm", "-T", "--no-deps", "dbclient")
