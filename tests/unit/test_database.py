"""An external database (a managed Postgres, DATABASE_URL in .env): its URL's checks, what the server's .env
and compose file hold, how the inventory lays out app servers around it, and how the server reads it."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.test_render import ctx
from vpskit import commands, envfile, settings
from vpskit import inventory as inv
from vpskit.database import ExternalDatabase
from vpskit.render import render
from vpskit.settings import SettingsError

URL = "postgresql://site:p%40ss%20w@db.example.net:25060/shop?sslmode=require"
SECRET = "s" * 40


def compose(database_external: bool = False, backup_server: bool = True, **overrides) -> dict:
    return yaml.safe_load(render("docker-compose.yml", **{**ctx(**overrides), "bundled_proxy": True,
                                                          "database_external": database_external,
                                                          "backup_server": backup_server}))


def test_a_managed_postgres_url_gives_libpq_its_parts():
    db = ExternalDatabase.parse(URL)
    assert db.where == "db.example.net:25060/shop"
    assert db.client_env() == {"PGHOST": "db.example.net", "PGPORT": "25060", "PGUSER": "site",
                               "PGPASSWORD": "p@ss w", "PGDATABASE": "shop", "PGSSLMODE": "require"}
    # node-postgres's no-verify is libpq's require; no sslmode leaves libpq's default.
    assert ExternalDatabase.parse("postgres://a:b@10.1.2.3/x?sslmode=no-verify").client_env()["PGSSLMODE"] == "require"
    plain = ExternalDatabase.parse("postgres://a:b@10.1.2.3/x")
    assert plain.port == 5432 and "PGSSLMODE" not in plain.client_env()


@pytest.mark.parametrize("url, message", [
    ("mysql://a:b@h/x", "is not a postgres URL"),
    ("postgresql://a@db.example.net/x", "has no password"),
    ("postgresql://a:b@db.example.net/", "has no database name"),
    ("postgresql://a:b@db.example.net:port/x", "port that is not a number"),
    ("postgresql://a:b@127.0.0.1:5432/x", "points at 127.0.0.1, which on the server is the server itself"),
    ("postgresql://a:b@localhost/x", "points at localhost"),
    ("postgresql://a:b@db:5432/x", "points at db"),
    ("postgresql://a:b@h.example.net/x?sslmode=always", "sslmode=always, which is not one of"),
])
def test_a_bad_database_url_is_one_clear_line(url, message):
    with pytest.raises(SettingsError, match=message) as err:
        ExternalDatabase.parse(url)
    assert "\n" not in str(err.value) and ("b@" not in str(err.value))  # the password is not repeated


def test_with_database_url_no_postgres_password_is_needed_and_the_app_gets_the_url_as_given(tmp_path):
    path = tmp_path / ".env"
    path.write_text(f"DATABASE_URL={URL}\nPAYLOAD_SECRET={SECRET}\n")
    values = envfile.read(path)
    env = envfile.server_env(values, settings.load({}))
    assert env["DATABASE_URL"] == env["DATABASE_URI"] == URL
    assert env["PGHOST"] == "db.example.net" and env["PGPASSWORD"] == "p@ss w"
    assert not {k for k in env if k.startswith("POSTGRES_")}
    path.write_text(f"DATABASE_URL=postgresql://a:b@localhost/x\nPAYLOAD_SECRET={SECRET}\n")
    with pytest.raises(SettingsError, match="points at localhost"):
        envfile.read(path)
    path.write_text(f"PAYLOAD_SECRET={SECRET}\n")  # without it, vpskit runs postgres: its password is needed
    with pytest.raises(SettingsError, match="POSTGRES_PASSWORD is missing"):
        envfile.read(path)


def test_one_server_with_an_external_database_runs_the_app_and_a_client_for_backups_but_no_database():
    c = compose(database_external=True, backup_server=True)
    assert set(c["services"]) == {"app", "dbclient"}
    assert "depends_on" not in c["services"]["app"]
    client = c["services"]["dbclient"]
    assert client["profiles"] == ["tools"] and client["env_file"] == ".env" and client["cap_drop"] == ["ALL"]
    # An app server that does not take the backups has no client.
    assert set(compose(role="app", database_host="external", database_external=True,
                       backup_server=False)["services"]) == {"app"}
    # Without DATABASE_URL nothing changes.
    assert set(compose()["services"]) == {"app", "db"}


def test_app_hosts_with_a_database_url_need_no_db_server_and_the_first_takes_the_backups(monkeypatch, tmp_path):
    env = tmp_path / ".env"
    env.write_text(f"DATABASE_URL={URL}\nPAYLOAD_SECRET={SECRET}\n")
    monkeypatch.setenv("VPSKIT_ENV_FILE", str(env))
    monkeypatch.setattr(inv.preflight, "check", lambda group, data: {"role": data["role"], "media_bucket": "m"})
    monkeypatch.setenv("VPSKIT_APP_HOSTS", "203.0.113.5 10.0.0.5, 203.0.113.6 10.0.0.6")
    monkeypatch.delenv("VPSKIT_DB_HOST", raising=False)
    listed = inv.hosts()
    assert listed["db_servers"] == []
    assert [(n, d["role"], d["database_host"]) for n, d in listed["app_servers"]] == [
        ("203.0.113.5", "app", "external"), ("203.0.113.6", "app", "external")]
    monkeypatch.setenv("VPSKIT_DB_HOST", "203.0.113.7 10.0.0.7")
    with pytest.raises(SettingsError, match="DATABASE_URL in .env names an external database, and VPSKIT_DB_HOST"):
        inv.hosts()


def test_the_deploy_reads_applied_migrations_through_the_server_program():
    """Which database and how to reach it (the db service, or the client container of an external one) is the
    server program's rule alone (test_migration_runner); the deploy's fact only asks it."""
    cmd = commands.applied_migrations("/opt/shop")
    assert "/opt/shop/bin/vpskit-server db migrations --app-dir /opt/shop" in cmd
    assert "psql" not in cmd and "PGHOST" not in cmd
