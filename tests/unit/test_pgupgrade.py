"""The decisions of a PostgreSQL major upgrade (vpskit/server/pgupgrade.py): when it may start, the compose file's
db image changed and nothing else, the roles carried over without the one the new server makes itself."""

import pytest

from tests.unit.test_render import ctx
from vpskit.render import render
from vpskit.server.pgupgrade import UpgradeFailed, db_image, globals_for_new, refusal, server_major, with_db_image


def compose(image: str = "postgres:15") -> str:
    return render("docker-compose.yml", **{**ctx(postgres_image=image), "bundled_proxy": True})


def test_the_db_image_changes_and_nothing_else():
    before = compose("postgres:15")
    after = with_db_image(before, "postgres:17")
    assert db_image(before) == "postgres:15" and db_image(after) == "postgres:17"
    assert after == compose("postgres:17")
    assert "image: example:abc123" in after  # the app's image stays


def test_a_compose_file_without_a_db_service_is_refused():
    with pytest.raises(UpgradeFailed, match="no db service image to change: nothing was changed"):
        with_db_image("services:\n  app:\n    image: example:v1\n", "postgres:17")


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
