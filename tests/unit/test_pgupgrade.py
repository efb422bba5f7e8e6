"""The decisions of a PostgreSQL major upgrade (vpskit/server/pgupgrade.py): when it may start, the compose file's
db image changed and nothing else, the roles carried over without the one the new server makes itself."""

import shutil
from pathlib import Path

import pytest

from tests.unit.test_render import ctx
from vpskit.render import render
from vpskit.server import pgupgrade
from vpskit.server.effects import Result
from vpskit.server.pgupgrade import (
    Upgrade,
    UpgradeFailed,
    db_image,
    globals_for_new,
    refusal,
    server_major,
    with_db_image,
)
from vpskit.server.proxy import Proxy


def compose(image: str = "postgres:15") -> str:
    return render("docker-compose.yml", **{**ctx(postgres_image=image), "bundled_proxy": True})


def test_the_db_image_changes_and_nothing_else():
    before = compose("postgres:15")
    after = with_db_image(before, "postgres:17", "17")
    assert db_image(before) == "postgres:15" and db_image(after) == "postgres:17"
    assert after == compose("postgres:17")
    assert "image: example:abc123" in after  # the app's image stays


def test_from_18_the_volume_goes_where_the_official_image_wants_it():
    """PostgreSQL 18's images keep PGDATA in /var/lib/postgresql/18/docker and refuse a volume at the old place."""
    after = with_db_image(compose("postgres:17"), "postgres:18", "18")
    assert "      - db-data:/var/lib/postgresql\n" in after and after == compose("postgres:18")
    assert "      - db-data:/var/lib/postgresql/data\n" in with_db_image(after, "postgres:17", "17")
    assert "      - db-data:/var/lib/postgresql/data\n" in compose("postgres:latest")  # unknown: the old place


def test_a_compose_file_without_a_db_service_is_refused():
    with pytest.raises(UpgradeFailed, match="no db service image or volume to change: nothing was changed"):
        with_db_image("services:\n  app:\n    image: example:v1\n", "postgres:17", "17")


@pytest.mark.parametrize(("data", "target", "said"), [
    ("15", "17", ""),
    ("17", "17", ""),  # nothing to do, said by the caller
    ("17", "15", "postgres:x is PostgreSQL 15, older than the data's 17: a major upgrade only goes forward"),
    ("", "17", "the database's volume has no PostgreSQL data (PG_VERSION) yet: deploy first"),
    ("15", "", "cannot tell which PostgreSQL major postgres:x runs"),
    ("9.6", "10", ""),
])
def test_when_an_upgrade_may_start(data, target, said):
    got = refusal(data, target, "postgres:x")
    assert got.startswith(said) and bool(said) == bool(got)


def test_the_roles_come_along_but_the_new_servers_own_bootstrap_role():
    dumped = ("SET default_transaction_read_only = off;\nCREATE ROLE payload;\nALTER ROLE payload WITH SUPERUSER "
              "LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc';\nCREATE ROLE reader;\nALTER ROLE reader WITH LOGIN;\n")
    out = globals_for_new(dumped, "payload")
    assert "CREATE ROLE payload;" not in out and "ALTER ROLE payload WITH SUPERUSER" in out
    assert "CREATE ROLE reader;" in out and "PASSWORD 'SCRAM-SHA-256$4096:abc'" in out


@pytest.mark.parametrize(("line", "major"), [
    ("postgres (PostgreSQL) 17.6 (Debian 17.6-1.pgdg13+1)", "17"),
    ("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)", "15"),
    ("postgres (PostgreSQL) 9.6.24", "9.6"),
    ("sh: postgres: not found", ""),
])
def test_the_major_an_image_runs(line, major):
    assert server_major(line) == major


# --- the transaction, against a stand-in for the server's Docker: volumes are folders here, the rest is recorded
class PgFx:
    def __init__(self, tmp: Path, fail: tuple[str, ...] = ()):
        self.vols, self.fail, self.calls, self.said, self.t = tmp / "volumes", fail, [], [], 0.0
        self.db_size = 8 * 1048576
        self.services = "app\ndb\n"  # "db\n": a db server

    def vol(self, name: str) -> Path:
        return self.vols / name / "_data"

    def say(self, line: str) -> None:
        self.said.append(line)

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def clock(self) -> float:
        return self.t

    def pipe(self, args, stdin, consume):
        return 0, consume(["COPY public.posts (id, title) FROM stdin;\n", "1\ta\n", "2\tb\n", "\\.\n"])

    def run(self, *args: str, input=None, stdin=None, out=None, env=None, **kw) -> Result:  # noqa: A002
        line = " ".join(args)
        self.calls.append(line)
        if args[:3] == ("docker", "volume", "inspect"):
            v = self.vol(args[-1])
            return Result(0, f"{v}\n") if v.is_dir() else Result(1, "", "no such volume")
        if args[:3] == ("docker", "volume", "create"):
            self.vol(args[-1]).mkdir(parents=True, exist_ok=True)
            return Result(0)
        if args[:3] == ("docker", "volume", "rm"):
            shutil.rmtree(self.vols / args[-1], ignore_errors=True)
            return Result(0)
        if args[:2] == ("docker", "info"):  # where Docker keeps its volumes: on the backups' disk here
            return Result(0, f"{self.vols.parent}\n")
        if "pg_database_size" in line:
            return Result(0, f"{self.db_size}\n")
        if args[-1] == "--version":
            return Result(0, "postgres (PostgreSQL) 17.6 (Debian 17.6-1)\n")
        if args[1:2] == ("backup",):
            return Result(0, "20261207T030000Z\n")
        if args[2:4] == ("config", "--services"):
            return Result(0, self.services)
        if args[:3] == ("docker", "run", "-d"):  # the new server initialises its volume
            self.vol("example_db-data-next").mkdir(parents=True, exist_ok=True)
            (self.vol("example_db-data-next") / "PG_VERSION").write_text("17\n")
        if out is not None:
            out.write_text("-- dumped\n")
            return Result(0)
        if any(f in line for f in self.fail):
            return Result(1, "", "stand-in failure\n")
        if input and "count(*)" in input:
            return Result(0, "2\n")
        return Result(0)


@pytest.fixture
def box(tmp_path, monkeypatch):
    app = tmp_path / "opt" / "example"
    app.mkdir(parents=True)
    (app / "docker-compose.yml").write_text(compose("postgres:15"))
    (app / ".env").write_text("POSTGRES_USER=payload\nPOSTGRES_PASSWORD=pw\nPOSTGRES_DB=payload\n")
    healthy: list[bool] = []
    monkeypatch.setattr(pgupgrade, "wait_healthy", lambda fx, seconds, label: healthy.pop(0) if healthy else True)

    def make(fail: tuple[str, ...] = ()) -> tuple[Upgrade, PgFx]:
        fx = PgFx(tmp_path, fail)
        fx.vol("example_db-data").mkdir(parents=True, exist_ok=True)
        if not (fx.vol("example_db-data") / "PG_VERSION").exists():
            (fx.vol("example_db-data") / "PG_VERSION").write_text("15\n")
        up = Upgrade(app, tmp_path / "backups", "postgres:17", fx, tmp_path / "bin")
        up.proxy = Proxy(fx, tmp_path / "proxy")
        return up, fx

    return app, make, healthy


def major_in(fx: PgFx, volume: str) -> str:
    f = fx.vol(volume) / "PG_VERSION"
    return f.read_text().strip() if f.exists() else ""


def test_an_upgrade_switches_only_after_the_copy_restored_and_keeps_the_old_data(box):
    app, make, _ = box
    up, fx = make()
    assert up.run() == 0, fx.said
    assert major_in(fx, "example_db-data") == "17" and major_in(fx, "example_db-data-15") == "15"
    assert not fx.vol("example_db-data-next").exists()
    assert db_image((app / "docker-compose.yml").read_text()) == "postgres:17"
    def at(part: str) -> int:
        return next(i for i, c in enumerate(fx.calls) if part in c)

    # The backup, the app stopped, the copy restored, and only then the old database stopped for the switch.
    assert at(" backup ") < at("compose stop app") < at("pg_restore -U") < at("compose stop db") < at("compose up")
    assert fx.said[-2].startswith("vpskit upgrade: done: PostgreSQL 17 serves 1 tables, 2 rows, as the dump had")
    assert "--data rollback=true" in fx.said[-1] and "example_db-data-15" in fx.said[-1]
    assert '"from_image": "postgres:15"' in (app / "db-upgrade.json").read_text()


def test_a_restore_that_fails_leaves_the_old_database_serving_untouched(box):
    app, make, _ = box
    before = (app / "docker-compose.yml").read_text()
    up, fx = make(fail=("pg_restore -U",))
    assert up.run() == 1
    assert fx.said[-1] == ("vpskit upgrade: restoring the database into PostgreSQL 17 failed (above): the old "
                           "database is unchanged and serves the app")
    assert major_in(fx, "example_db-data") == "15" and not fx.vol("example_db-data-15").exists()
    assert not fx.vol("example_db-data-next").exists()  # the new server's volume went
    assert (app / "docker-compose.yml").read_text() == before
    assert any("compose start app" in c for c in fx.calls) and not any("compose stop db" in c for c in fx.calls)


def test_a_db_server_is_closed_to_the_app_servers_until_the_switch_and_its_kept_data_keeps_its_rules(box):
    app, make, _ = box
    up, fx = make()
    fx.services = "db\n"
    assert up.run() == 0, fx.said

    def at(part: str, start: int = 0) -> int:
        return next(i for i, c in enumerate(fx.calls) if i >= start and part in c)

    closing = at("host all all all reject")
    assert "pg_terminate_backend" in fx.calls[closing] and "client_addr is not null" in fx.calls[closing]
    # Closed before the dump; the old data's own rules put back, without a reload, before it stops and is kept.
    opening = at(pgupgrade.HBA_OPEN)
    assert at(" backup ") < closing < at("pg_dump -Fc") < opening < at("compose stop db")
    assert "pg_reload_conf" not in fx.calls[opening]
    assert not any("compose stop app" in c for c in fx.calls)
    assert sum(pgupgrade.HBA_OPEN in c for c in fx.calls) == 1  # nothing left to open at the end


def test_a_db_server_whose_restore_fails_is_opened_to_the_app_servers_again(box):
    app, make, _ = box
    up, fx = make(fail=("pg_restore -U",))
    fx.services = "db\n"
    assert up.run() == 1
    assert fx.said[-1].endswith("the old database is unchanged and serves the app")
    opened = [c for c in fx.calls if pgupgrade.HBA_OPEN in c]
    assert len(opened) == 1 and "pg_reload_conf" in opened[0]
    assert not any("compose stop db" in c for c in fx.calls)


def test_without_room_for_the_dump_and_the_copy_nothing_is_closed_or_changed(box, monkeypatch):
    from vpskit.server import drill

    app, make, _ = box
    monkeypatch.setattr(drill, "free_mb", lambda path: 100)
    up, fx = make()
    fx.db_size = 60 * 1048576  # two copies of 60 MB and a fifth more: 146 MB
    assert up.run() == 1
    assert fx.said[-1].startswith("vpskit upgrade: not enough disk space for the upgrade: 100 MB free in ")
    assert "need about 146 MB; nothing was changed (backup 20261207T030000Z was taken)" in fx.said[-1]
    assert not any("compose stop" in c or "proxy" in c for c in fx.calls)
    assert major_in(fx, "example_db-data") == "15" and not up.proxy.closed("example")


def test_an_app_not_ready_on_the_new_major_gets_the_old_data_and_image_back(box):
    app, make, healthy = box
    before = (app / "docker-compose.yml").read_text()
    healthy += [False, True]
    up, fx = make()
    assert up.run() == 1
    assert "PostgreSQL 15 serves again, as before; the 17 copy is kept as example_db-data-17-failed" in fx.said[-1]
    assert major_in(fx, "example_db-data") == "15" and major_in(fx, "example_db-data-17-failed") == "17"
    assert not fx.vol("example_db-data-15").exists() and (app / "docker-compose.yml").read_text() == before
    assert not (app / "db-upgrade.json").exists()


def test_rollback_then_another_upgrade_and_drop_old(box):
    app, make, _ = box
    up, fx = make()
    assert up.run() == 0
    back, fx = make()
    assert back.rollback() == 0, fx.said
    assert major_in(fx, "example_db-data") == "15" and major_in(fx, "example_db-data-17") == "17"
    assert db_image((app / "docker-compose.yml").read_text()) == "postgres:15"
    assert "sudo docker volume rm example_db-data-17 frees it" in fx.said[-1]
    again, fx = make()
    assert again.rollback() == 1 and "no PostgreSQL upgrade of this app to go back from" in fx.said[-1]
    shutil.rmtree(fx.vols / "example_db-data-17")  # as the rollback said
    assert again.run() == 0
    drop, fx = make()
    assert drop.drop_old() == 0, fx.said
    assert fx.said[-1].startswith("vpskit upgrade: removed the PostgreSQL 15 data (example_db-data-15")
    assert not fx.vol("example_db-data-15").exists() and not (app / "db-upgrade.json").exists()
    assert major_in(fx, "example_db-data") == "17"
