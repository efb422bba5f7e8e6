"""The postgres:17 stand-in honours the official image's interface, so the kit's compose file and backups
behave on the test bed as they will with the real image."""

import pytest

from tests.support import Postgres
from tests.testbed.vps import docker, published_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def pg(testbed, request):
    name = f"vpskit-pg-{request.node.name[:30]}-{testbed}"
    db = Postgres(name=name, volume=f"{name}-data", session=testbed)
    yield db
    db.remove()
    docker("volume", "rm", "-f", db.volume, check=False)


def test_user_password_and_database_from_environment(pg):
    pg.run().wait_ready()
    with pg.connect() as conn:
        assert conn.execute("select current_user, current_database()").fetchone() == ("app", "app")
        assert conn.execute("show server_version").fetchone()[0].startswith("17.")
    bad = Postgres(name=pg.name, volume=pg.volume, session=pg.session, password="wrong", port=pg.port)
    with pytest.raises(Exception, match="password authentication failed"):
        bad.connect()


def test_data_survives_sigint_stop_and_a_new_container(pg):
    pg.run().wait_ready()
    with pg.connect() as conn:
        conn.execute("create table notes (id serial primary key, body text)")
        conn.execute("insert into notes (body) values ('kept')")
    assert "PostgreSQL init process complete" in pg.logs()

    assert docker("inspect", "-f", "{{.Config.StopSignal}}", pg.name).stdout.strip() == "SIGINT"
    docker("stop", "-t", "30", pg.name)
    state = docker("inspect", "-f", "{{.State.ExitCode}}", pg.name).stdout.strip()
    assert state == "0"
    assert "database system is shut down" in pg.logs()

    docker("start", pg.name)
    pg.port = published_port(pg.name, "5432/tcp")
    pg.wait_ready()
    with pg.connect() as conn:
        assert conn.execute("select body from notes").fetchall() == [("kept",)]
    assert "database system was not properly shut down" not in pg.logs()

    pg.remove()
    second = Postgres(name=pg.name, volume=pg.volume, session=pg.session).run().wait_ready()
    assert "PostgreSQL init process complete" not in second.logs()  # no initdb on a data directory in use
    with second.connect() as conn:
        assert conn.execute("select body from notes").fetchall() == [("kept",)]


def test_pg_isready_on_path(pg):
    pg.run().wait_ready()
    out = docker("exec", pg.name, "pg_isready", "-h", "127.0.0.1")
    assert "accepting connections" in out.stdout


def test_refuses_to_start_without_a_password(testbed):
    name = f"vpskit-pg-nopw-{testbed}"
    try:
        docker("run", "--name", name, "--label", f"vpskit.testbed.session={testbed}", "postgres:17", check=False)
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() != "0"
        assert "POSTGRES_PASSWORD" in docker("logs", name).stderr
    finally:
        docker("rm", "-f", "-v", name, check=False)
