"""Several servers: the inventory's roles, the settings that tie them together, what each role's compose file
holds, the db server's packet filter (as a command line) and the rolling release's bookkeeping."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.test_render import ctx
from vpskit import commands, envfile, rolling, settings, steps
from vpskit import inventory as inv
from vpskit.render import render
from vpskit.settings import SettingsError


def compose(**overrides) -> dict:
    return yaml.safe_load(render("docker-compose.yml", **{**ctx(**overrides), "bundled_proxy": True}))


def test_servers_give_each_host_its_role_and_its_peers_addresses():
    listed = inv.servers(app=[("web1", {"private_address": "10.0.0.5"}), "192.0.2.6"],
                         db=("db1", {"private_address": "10.0.0.7"}), common={"ssh_user": "ops"})
    (a_name, a), (b_name, b) = listed["app_servers"]
    ((db_name, db),) = listed["db_servers"]
    assert (a_name, b_name, db_name) == ("web1", "192.0.2.6", "db1")
    assert a["role"] == b["role"] == "app" and db["role"] == "db"
    assert a["database_host"] == b["database_host"] == "10.0.0.7"
    # An app server without a private address is reached at its SSH address.
    assert db["database_clients"] == "10.0.0.5,192.0.2.6"
    assert a["ssh_user"] == db["ssh_user"] == "ops" and b["ssh_hostname"] == "192.0.2.6"


CLIENT_NAME = ("database_clients: 'web2.example.com' is not an IPv4 address: give each app server's private IPv4 "
               "address after its SSH address in VPSKIT_APP_HOSTS, e.g. \"203.0.113.5 10.0.0.5\" (or private_address "
               "in inventory.py's app_servers)")


def test_host_names_are_refused_for_the_db_servers_filter_with_one_line(monkeypatch, tmp_path):
    # A name is looked up when the filter loads (at boot, when it may not resolve): addresses only.
    for value in ("10.0.0.5,web2.example.com", "web2.example.com", "10.0.0.5, web2.example.com"):
        with pytest.raises(SettingsError) as err:
            settings.load({"role": "db", "private_address": "10.0.0.7", "database_clients": value})
        assert str(err.value) == CLIENT_NAME
    for value in ("10.0.0.300", "10.0.0", "10.0.0.5/33", "::1"):
        with pytest.raises(SettingsError, match=f"database_clients: '{value}' is not an IPv4 address: give each"):
            settings.load({"role": "db", "private_address": "10.0.0.7", "database_clients": value})
    loaded = settings.load({"role": "db", "private_address": "10.0.0.7", "database_clients": "10.0.0.5, 10.0.1.0/24"})
    assert loaded["database_clients"] == "10.0.0.5,10.0.1.0/24"
    # The db server's own address: Docker publishes postgres on it (an app server's may still be a name).
    with pytest.raises(SettingsError) as err:
        settings.load({"role": "db", "private_address": "db1.internal", "database_clients": "10.0.0.5"})
    assert str(err.value) == ("private_address: 'db1.internal' is not an IPv4 address: a db server publishes "
                              "postgres on its private IPv4 address; give it after the db server's SSH address in "
                              "VPSKIT_DB_HOST, e.g. \"203.0.113.7 10.0.0.7\" (or in inventory.py's db_servers)")
    assert settings.load({"role": "app", "private_address": "web1.internal", "database_host": "db1.internal"})
    # An inventory of host names only: the same one line, before any server is reached (none of these exist).
    with pytest.raises(SettingsError) as err:
        inv.servers(app=["web1.example.com", "web2.example.com"],
                    db=("db1.example.com", {"private_address": "10.0.0.7"}))
    assert str(err.value) == CLIENT_NAME.replace("web2", "web1")
    monkeypatch.setenv("VPSKIT_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("VPSKIT_APP_HOSTS", "192.0.2.10, 192.0.2.11:2222 web2.example.com")
    monkeypatch.setenv("VPSKIT_DB_HOST", "192.0.2.12 10.0.0.7")
    with pytest.raises(SettingsError) as err:
        inv.hosts()
    assert str(err.value) == CLIENT_NAME
    monkeypatch.setenv("VPSKIT_APP_HOSTS", "192.0.2.10 10.0.0.5")
    monkeypatch.setenv("VPSKIT_DB_HOST", "db1.example.com")
    with pytest.raises(SettingsError, match="^private_address: 'db1.example.com' is not an IPv4 address: a db server"):
        inv.hosts()


def test_a_server_listed_twice_is_refused():
    with pytest.raises(SettingsError, match="listed twice"):
        inv.servers(app=["web1", "web1"], db="db1")
    with pytest.raises(SettingsError, match="no app server"):
        inv.servers(app=[], db="db1")


def test_env_entries_name_the_ssh_address_port_and_private_address():
    assert inv._entry(" 203.0.113.5:2222 10.0.0.5 ", "K") == (
        "203.0.113.5:2222", {"ssh_hostname": "203.0.113.5", "ssh_port": 2222, "private_address": "10.0.0.5"})
    assert inv._entry("web1", "K") == ("web1", {"ssh_hostname": "web1", "ssh_port": 22})
    with pytest.raises(SettingsError, match="VPSKIT_APP_HOSTS: 'a b c' is not valid"):
        inv._entry("a b c", "VPSKIT_APP_HOSTS")
    with pytest.raises(SettingsError, match="'web1:ssh' has 'ssh' for a port, which is not a port number"):
        inv._entry("web1:ssh", "VPSKIT_APP_HOSTS")
    # One server's message is as before the several-server inventory.
    with pytest.raises(SettingsError) as err:
        inv._port("ssh", "VPSKIT_SSH_PORT")
    assert str(err.value) == "VPSKIT_SSH_PORT='ssh' is not a port number: use e.g. 22"


def test_app_hosts_without_a_db_host_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("VPSKIT_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("VPSKIT_APP_HOSTS", "203.0.113.5 10.0.0.5")
    monkeypatch.delenv("VPSKIT_DB_HOST", raising=False)
    with pytest.raises(SettingsError, match="VPSKIT_APP_HOSTS and VPSKIT_DB_HOST go together"):
        inv.hosts()


def test_roles_need_their_peers():
    with pytest.raises(SettingsError, match="role=app needs database_host"):
        settings.load({"role": "app"})
    with pytest.raises(SettingsError, match="role=db needs private_address"):
        settings.load({"role": "db", "database_clients": "10.0.0.5"})
    with pytest.raises(SettingsError, match="role=db needs database_clients"):
        settings.load({"role": "db", "private_address": "10.0.0.7"})
    with pytest.raises(SettingsError, match="role="):
        settings.load({"role": "web"})
    assert settings.load({"role": "app", "database_host": "10.0.0.7"})["rollout_batch"] == 1


def test_one_server_keeps_both_services():
    c = compose()
    assert set(c["services"]) == {"app", "db"} and "depends_on" in c["services"]["app"]


def test_an_app_server_runs_no_database_and_connects_to_the_db_server():
    c = compose(role="app", database_host="10.0.0.7")
    assert set(c["services"]) == {"app"} and "depends_on" not in c["services"]["app"]
    s = ctx(role="app", database_host="10.0.0.7")
    env = envfile.server_env({"POSTGRES_PASSWORD": "p w", "PAYLOAD_SECRET": "x" * 32}, s)
    assert env["DATABASE_URI"] == env["DATABASE_URL"] == "postgresql://payload:p%20w@10.0.0.7:5432/payload"


def test_a_db_server_publishes_postgres_on_its_private_address_only():
    c = compose(role="db", private_address="10.0.0.7", database_clients="10.0.0.5,10.0.0.6")
    assert set(c["services"]) == {"db"}
    assert c["services"]["db"]["ports"] == ["10.0.0.7:5432:5432"]
    assert "edge" not in c["networks"]
    # A new version of the app changes nothing on the db server.
    db = {"role": "db", "private_address": "10.0.0.7", "database_clients": "10.0.0.5"}
    assert render("docker-compose.yml", **{**ctx(**db), "app_version": "v1"}) == \
        render("docker-compose.yml", **{**ctx(**db), "app_version": "v2"})


def test_an_app_that_leaves_its_migrations_to_vpskit_has_them_run_by_the_db_server():
    db = {"role": "db", "private_address": "10.0.0.7", "database_clients": "10.0.0.5"}
    c = yaml.safe_load(render("docker-compose.yml", **{**ctx(**db), "migrate_image": "tmpl:v2"}))
    assert set(c["services"]) == {"db", "migrate"}
    runner = c["services"]["migrate"]
    assert runner["image"] == "tmpl:v2" and runner["profiles"] == ["migrate"]
    assert runner["depends_on"] == {"db": {"condition": "service_healthy"}}
    # The app servers have no runner: their migrations are applied before they roll, once.
    app = yaml.safe_load(render("docker-compose.yml", **{**ctx(role="app", database_host="10.0.0.7"),
                                                         "migrate_image": "tmpl:v2", "bundled_proxy": True}))
    assert set(app["services"]) == {"app"}
    assert steps.pending_migrations({"role": "app", "migrate_image": "tmpl:v2", "migrations": ["m1"]}) == []


def test_with_a_managed_database_such_an_app_is_refused_on_several_app_servers(monkeypatch, tmp_path):
    from vpskit import preflight

    env = tmp_path / ".env"
    env.write_text("DATABASE_URL=postgresql://a:b@db.example.net/x\nPAYLOAD_SECRET=" + "s" * 40 + "\n")
    monkeypatch.setenv("VPSKIT_ENV_FILE", str(env))
    from tests.e2e.test_payload_template import as_documented

    template = as_documented(tmp_path / "app")
    data = {"role": "app", "database_host": "external", "app_path": str(template), "ssh_hostname": "192.0.2.1",
            "ssh_port": 22}
    with pytest.raises(SettingsError, match="with a managed database on several servers the app must apply them"):
        preflight.check("production", data, argv=["pyinfra", "inventory.py", "deploy.py"])


FIREWALL = commands.database_firewall(("10.0.0.5", "10.0.1.0/24"))
# New connections to a container's postgres port, after Docker's DNAT (so also one routed straight to the
# container's address), from outside this server's Compose networks; replies pass.
MATCH = "! -i br-+ -o br-+ -p tcp --dport 5432 -m conntrack --ctdir ORIGINAL -j VPSKIT-DB"


def test_the_db_firewall_loads_its_chain_in_one_transaction_and_hooks_it_first():
    cmd = FIREWALL
    # The chain's whole content in one iptables-restore commit (declaring it flushes it): the app servers,
    # then the drop. Nothing else writes the chain.
    restore, rest = cmd.split(" | iptables-restore -w --noflush && ", 1)
    assert restore == ('{ echo "*filter"; echo ":VPSKIT-DB - [0:0]"; echo "-A VPSKIT-DB -s 10.0.0.5 -j RETURN"; '
                       'echo "-A VPSKIT-DB -s 10.0.1.0/24 -j RETURN"; echo "-A VPSKIT-DB -j DROP"; echo "COMMIT"; }')
    assert "VPSKIT-DB" not in rest.replace(MATCH, "")
    # DOCKER-USER made if missing (Docker keeps it), the hook inserted at its top once.
    assert rest == ("{ iptables -w -n -L DOCKER-USER >/dev/null 2>&1 || iptables -w -N DOCKER-USER; } && "
                    f"{{ iptables -w -C DOCKER-USER {MATCH} 2>/dev/null || iptables -w -I DOCKER-USER 1 {MATCH}; }}")
    # Every iptables call waits for the lock Docker takes; no match on the published (original) address.
    assert cmd.count("iptables") == cmd.count("iptables -w") + cmd.count("iptables-restore -w") == 5
    assert "ctorig" not in cmd and "%" not in cmd and "$" not in cmd and "'" not in cmd
    # Addresses only: a host name is refused here too (settings refuse it first, with the fix).
    for bad in (("web1.example.com",), ()):
        with pytest.raises(ValueError):
            commands.database_firewall(bad)


def test_the_db_firewall_is_clean_shell():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("no shellcheck")
    out = subprocess.run([shellcheck, "-s", "sh", "-"], input=FIREWALL + "\n", capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout


def test_the_db_firewall_unit_loads_before_docker_and_retries_until_it_has():
    unit = commands.database_firewall_unit("example", ("10.0.0.5",))
    lines = unit.splitlines()
    # Before Docker publishes postgres at boot, again when Docker restarts; Docker does not start it.
    assert "Before=docker.service" in lines and "PartOf=docker.service" in lines
    assert not [ln for ln in lines if ln.startswith(("After=", "Requires=", "BindsTo="))]
    assert "WantedBy=multi-user.target docker.service" in lines
    # A failure is retried every 2 s, for ever, as one start (RestartMode=direct): Docker, ordered after it,
    # waits rather than starts with the port open.
    for line in ("Type=oneshot", "RemainAfterExit=yes", "Restart=on-failure", "RestartSec=2", "RestartMode=direct",
                 "StartLimitIntervalSec=0"):
        assert line in lines
    (start,) = [ln for ln in lines if ln.startswith("ExecStart=")]
    assert start == "ExecStart=/bin/sh -c " + commands.q(commands.database_firewall(("10.0.0.5",)))


class _Host:
    def __init__(self, name):
        self.name = name


def test_a_failed_release_stops_the_rollout_and_sends_the_released_servers_back():
    rolling.reset()
    try:
        assert rolling.may_start()
        rolling.started(None, _Host("a"))
        rolling.released(None, _Host("a"))
        assert rolling.may_start() and not rolling.must_go_back("a")
        rolling.started(None, _Host("b"))  # b's release fails: never released
        assert not rolling.may_start()
        assert rolling.failed() == ["b"]
        assert rolling.must_go_back("a") and not rolling.must_go_back("b") and not rolling.must_go_back("c")
    finally:
        rolling.reset()


def test_timers_follow_the_role():
    from vpskit.steps import runs_timer

    assert all(runs_timer({"role": "all"}, k) for k in ("backup", "drill", "health"))
    assert [k for k in ("backup", "drill", "health") if runs_timer({"role": "app"}, k)] == ["health"]
    assert all(runs_timer({"role": "db"}, k) for k in ("backup", "drill", "health"))
    # An external database: the app server that backs it up runs the backups and drills; the others do not.
    assert all(runs_timer({"role": "app", "backup_server": True}, k) for k in ("backup", "drill", "health"))
    assert [k for k in ("backup", "drill", "health") if runs_timer({"role": "app", "backup_server": False}, k)] == [
        "health"]
