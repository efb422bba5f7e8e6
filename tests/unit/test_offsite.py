"""Offsite copies and alerts as the deploying machine renders them: what reaches the server's root-only file,
what never reaches the app's environment or a unit file, and one clear line for each thing missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vpskit import envfile, settings, steps, tasks
from vpskit.offsite import Offsite, kind, sftp_command
from vpskit.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"POSTGRES_PASSWORD": "pg-pw", "PAYLOAD_SECRET": "x" * 40}


def plan(**over) -> dict:
    return tasks.paths(settings.load(over))


def test_kinds_of_repository():
    assert [kind(r) for r in ("", "sftp:u@h:/r", "s3:https://h/b", "/srv/r")] == ["", "sftp", "s3", "local"]


@pytest.mark.parametrize("value", ["ftp://h/r", "s3:bucket", "relative/path", "sftp:u@h:/r; rm -rf /"])
def test_a_repository_restic_cannot_use_is_refused(value):
    with pytest.raises(SettingsError, match="backup_offsite=.* is not valid: use sftp:user@host:/path"):
        settings.load({"backup_offsite": value})


def test_sftp_goes_through_the_apps_own_key_with_a_bounded_connect():
    cmd = sftp_command("sftp://storage@box:2222//srv/restic", "/etc/vpskit/a/key", "/etc/vpskit/a/kh")
    assert cmd.startswith("ssh -i /etc/vpskit/a/key ")
    assert "-p 2222 storage@box -s sftp" in cmd and "ConnectTimeout=15" in cmd and "BatchMode=yes" in cmd
    assert "-p 22 storage@box -s sftp" in sftp_command("sftp:storage@box:/home/storage/r", "k", "h")


@pytest.mark.parametrize(("repo", "env", "message"), [
    ("/srv/r", {}, "backup_offsite is set but RESTIC_PASSWORD is missing from .env"),
    ("s3:https://s3.example.com/b", {"RESTIC_PASSWORD": "p"}, "OFFSITE_ACCESS_KEY_ID or OFFSITE_SECRET_ACCESS_KEY"),
    ("sftp:u@h:/r", {"RESTIC_PASSWORD": "p"}, "OFFSITE_SSH_KEY_FILE \\(not set\\) in .env is not a readable"),
    ("sftp:u@h:/r", {"RESTIC_PASSWORD": "p", "OFFSITE_SSH_KEY_FILE": "/nonexistent/key"}, "/nonexistent/key"),
])
def test_what_is_missing_is_named(repo, env, message):
    with pytest.raises(SettingsError, match=message):
        Offsite.of(plan(backup_offsite=repo), env)


def test_secrets_reach_only_the_root_only_file(tmp_path):
    key = tmp_path / "box_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nkey-material\n-----END OPENSSH PRIVATE KEY-----\n")
    values = {**BASE, "RESTIC_PASSWORD": "pw with 'quotes' $and spaces", "OFFSITE_SSH_KEY_FILE": str(key),
              "NOTIFY_URL": "https://hooks.example.com/T0/secret-token"}
    s = plan(backup_offsite="sftp:storage@box:/home/storage/restic")
    conf = Offsite.of(s, values)
    files = {f.path: f for f in conf.files()}
    assert set(files) == {"/etc/vpskit/example/offsite.env", "/etc/vpskit/example/offsite_ssh_key"}
    assert all((f.mode, f.user, f.group) == ("600", "root", "root") for f in files.values())
    text = files["/etc/vpskit/example/offsite.env"].content
    # What the shell reads back is exactly the password, whatever its characters.
    out = subprocess.run(["bash", "-c", f"{text}\nprintf %s \"$RESTIC_PASSWORD\""], capture_output=True, text=True)
    assert out.stdout == values["RESTIC_PASSWORD"]
    assert "key-material" in files["/etc/vpskit/example/offsite_ssh_key"].content

    # Not in the app's environment, not in any unit file.
    app_env = envfile.server_env(values, s)
    assert not set(app_env) & {"RESTIC_PASSWORD", "OFFSITE_SSH_KEY_FILE", "NOTIFY_URL"}
    s["offsite"] = conf
    units = "".join(steps.timer_units(s).values())
    for secret in ("pw with", "secret-token", "key-material"):
        assert secret not in units


def test_s3_keys_become_restics_names_on_the_server():
    values = {**BASE, "RESTIC_PASSWORD": "p", "OFFSITE_ACCESS_KEY_ID": "AKIA1", "OFFSITE_SECRET_ACCESS_KEY": "sk"}
    env = Offsite.of(plan(backup_offsite="s3:http://s3:5000/backups"), values).env()
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("AKIA1", "sk")
    assert env["RESTIC_REPOSITORY"] == "s3:http://s3:5000/backups" and env["VPSKIT_KEEP"] == "7 4 6"
    assert "OFFSITE_ACCESS_KEY_ID" not in envfile.server_env(values, plan())


def test_without_offsite_or_alerts_nothing_is_installed():
    conf = Offsite.of(plan(), BASE)
    assert conf.packages() == [] and conf.env() == {"VPSKIT_APP": "example"}
    with_all = Offsite.of(plan(backup_offsite="/srv/r"), {**BASE, "RESTIC_PASSWORD": "p", "NOTIFY_URL": "http://h"})
    assert with_all.packages() == ["restic"]  # alerts need no package: the server program sends them


def test_each_timer_alerts_through_notify_and_an_empty_schedule_has_none():
    s = plan()
    units = steps.timer_units(s)
    assert sorted(units) == sorted(f"vpskit-{k}-example.{u}" for k in ("backup", "drill", "health")
                                   for u in ("service", "timer"))
    assert ("ExecStart=/opt/example/bin/vpskit-server notify --app-dir /opt/example run backup -- "
            "/opt/example/bin/vpskit-server backup --app-dir /opt/example --backups /var/backups/example --keep 7 4 6 "
            "--lock-wait 300") in units[
        "vpskit-backup-example.service"]
    # A hung run is stopped (review item 11): it would hold the backups' lock, and every deploy behind it.
    assert "TimeoutStartSec=1h" in units["vpskit-backup-example.service"]
    assert "TimeoutStartSec=1h" in units["vpskit-drill-example.service"]
    assert "TimeoutStartSec=5min" in units["vpskit-health-example.service"]
    assert ("vpskit-server drill --app-dir /opt/example --backups /var/backups/example --which latest --source local"
            in units["vpskit-drill-example.service"])
    assert "OnCalendar=Sun *-*-* 04:45:00" in units["vpskit-drill-example.timer"]
    assert ("vpskit-server health --app-dir /opt/example --backups /var/backups/example --port 3000 "
            "--max-backup-age 26 --max-offsite-age 172800") in units["vpskit-health-example.service"]
    offsite = plan(backup_offsite="/srv/r", drill_schedule="", health_schedule="")
    assert sorted(steps.timer_units(offsite)) == ["vpskit-backup-example.service", "vpskit-backup-example.timer"]
    assert tasks.drill_command(offsite).endswith("--which latest --source offsite")


@pytest.mark.parametrize(("value", "secs"), [("2d", 172800), ("36h", 129600), ("90m", 5400), ("5s", 5)])
def test_offsite_age_limit(value, secs):
    assert settings.seconds(settings.load({"offsite_max_age": value})["offsite_max_age"]) == secs
