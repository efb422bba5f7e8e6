"""Offsite copies with restic over sftp to a storage box (a second test-bed VPS with its own user and key, on a
network the test bed creates), restore from offsite, the restore drill, alerts to a webhook receiver, and what
the day-2 tasks say. One deployed VPS for the module."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil

import pytest

from tests.sites import Site, expected_retention
from tests.support import Webhook, run_pyinfra, storage_box, wait_until
from tests.testbed import vps as testbed_vps

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

BACKUPS = "/var/backups/example"
PASSWORD = "restic-offsite-pw-5a4d"
HOOK_TOKEN = "hook-token-93be"
NEVER = "2099-01-01 00:00:00"  # timers that must not fire during the module: the tests start their units


@pytest.fixture(scope="module")
def bed(vps_factory, testbed, tmp_path_factory):
    net = testbed_vps.network(f"vpskit-offsite-{os.getpid()}", testbed)
    box = vps_factory("box", network=net)
    key, repo = storage_box(box)
    hook = Webhook.start(box)
    vps = vps_factory("offsite", network=net, docker_ready=True)
    folder = tmp_path_factory.mktemp("operator")
    env_file = folder / ".env"
    shutil.copy(key, folder / "storage_key")
    (folder / "storage_key").chmod(0o600)
    env_file.write_text("POSTGRES_PASSWORD=offsite-db-pw\nPAYLOAD_SECRET=offsite-payload-secret-0123456789abcdef\n"
                        f"RESTIC_PASSWORD={PASSWORD}\nOFFSITE_SSH_KEY_FILE={folder / 'storage_key'}\n"
                        f"NOTIFY_URL={hook.url(box.name)}?token={HOOK_TOKEN}\n")
    target = f"sftp:storage@{box.name}:{repo}"
    env = {"VPSKIT_BACKUP_OFFSITE": target, "VPSKIT_BACKUP_SCHEDULE": NEVER, "VPSKIT_DRILL_SCHEDULE": NEVER,
           "VPSKIT_HEALTH_SCHEDULE": NEVER}
    out = run_pyinfra(vps, env_file, "deploy.py", env=env)
    assert out.returncode == 0, out.stdout[-4000:]
    assert "Install restic, openssh-client" in out.stdout
    site = Site(vps).open()
    site.register()
    bed = {"vps": vps, "box": box, "hook": hook, "env_file": env_file, "env": env, "target": target, "repo": repo,
           "site": site, "folder": folder}
    yield bed
    site.close()


def task(bed, name: str, *extra: str, env: dict | None = None, env_file=None):
    return run_pyinfra(bed["vps"], env_file or bed["env_file"], name, *extra, env={**bed["env"], **(env or {})})


def probed_healthy_since(vps, service: str, since: int) -> bool:
    """The service's last Docker health probe started at or after `since` (epoch seconds) and passed."""
    probes = vps.exec("sh", "-c", f"cd /opt/example && docker inspect -f "
                      "'{{range .State.Health.Log}}{{.Start.Unix}} {{.ExitCode}}\n{{end}}' "
                      f"$(docker compose ps -q {service})").stdout.split("\n")
    last = [line.split() for line in probes if line.strip()][-1:]
    return bool(last) and int(last[0][0]) >= since and last[0][1] == "0"


def local_backups(vps) -> list[str]:
    out = vps.exec("sh", "-c", f"ls -1 {BACKUPS} 2>/dev/null || true").stdout.split()
    return sorted(n for n in out if re.fullmatch(r"[0-9]{8}T[0-9]{6}Z", n))


def remote_backups(bed) -> list[str]:
    """The backup names of the app's snapshots in a repository, read on the server with its own configuration."""
    script = (". /etc/vpskit/example/offsite.env; opts=(); if [ -n \"${VPSKIT_SFTP_COMMAND:-}\" ]; then "
              "opts=(-o \"sftp.command=$VPSKIT_SFTP_COMMAND\"); fi; "
              "restic \"${opts[@]}\" snapshots --json --host example --tag vpskit")
    out = bed["vps"].exec("bash", "-c", script)
    return sorted(re.findall(r'"backup=([0-9TZ]+)"', out.stdout))


def databases(bed) -> set[str]:
    out = bed["vps"].exec("sh", "-c", "cd /opt/example && docker compose exec -T db psql -U payload -d postgres -tAc "
                          "'select datname from pg_database'")
    return set(out.stdout.split())


def secrets_anywhere(bed, text: str) -> list[str]:
    """The secrets that appear in `text`."""
    return [s for s in (PASSWORD, HOOK_TOKEN, "BEGIN OPENSSH PRIVATE KEY") if s in text]


def test_backup_goes_offsite_says_where_and_shows_no_secret(bed):
    vps, site = bed["vps"], bed["site"]
    site.add(["first post", "second post"])
    # Every process's command line sampled while the backup runs (bounded: 90 s at most).
    vps.exec("sh", "-c", "rm -f /root/ps.log; (timeout 90 sh -c 'while :; do ps -eo args; sleep 0.05; done' "
             "> /root/ps.log 2>&1 &)")
    out = task(bed, "tasks/backup.py", "--debug")
    vps.exec("pkill", "-f", "while :; do ps -eo args", check=False)
    assert out.returncode == 0, out.stdout[-4000:]
    name = local_backups(vps)[-1]
    assert re.search(rf"backup {name} complete in \d+s: database \d+ kB, media \d+ kB \(2 files\), in {BACKUPS}/{name}",
                     out.stdout), out.stdout[-3000:]
    assert re.search(rf"offsite copy of {name}: snapshot [0-9a-f]{{8}} in {re.escape(bed['target'])}", out.stdout)
    assert "initialized the restic repository" in out.stdout  # the first run made it
    assert remote_backups(bed) == [name]
    # On the box: the repository's files, the storage user's, encrypted (no title in clear).
    box = bed["box"].exec("sh", "-c", f"stat -c %U {bed['repo']}/config && grep -rl 'first post' {bed['repo']} | wc -l")
    assert box.stdout.split() == ["storage", "0"]

    # No secret in pyinfra's --debug output, in any process's command line during the upload, in the app's
    # environment, or in a file on the server that anyone but root can read.
    ps = vps.exec("cat", "/root/ps.log").stdout
    assert "restic" in ps and "backup --host example" in ps  # the sampler did see the upload
    assert secrets_anywhere(bed, out.stdout) == [] and secrets_anywhere(bed, ps) == []
    assert secrets_anywhere(bed, vps.exec("cat", "/opt/example/.env").stdout) == []
    readable = vps.exec("sh", "-c", "runuser -u nobody -- grep -rlsF -e " + PASSWORD + " -e " + HOOK_TOKEN +
                        " /etc /opt /var/backups /var/lib/vpskit /var/log /home /tmp /run /srv || true")
    assert readable.stdout.split() == []
    mode = vps.exec("stat", "-c", "%a %U", "/etc/vpskit/example/offsite.env", "/etc/vpskit/example/offsite_ssh_key")
    assert mode.stdout.split() == ["600", "root", "600", "root"]


def test_restore_from_offsite_says_which_backup_and_how_to_go_back(bed):
    vps, site = bed["vps"], bed["site"]
    before = site.snapshot()
    name = remote_backups(bed)[-1]
    site.delete_posts(1)
    assert site.snapshot() != before
    out = task(bed, "tasks/restore.py", "--data", "from=offsite")
    assert out.returncode == 0, out.stdout[-4000:]
    assert re.search(rf"restored backup {name} \(offsite snapshot [0-9a-f]{{8}}\): 2 media files", out.stdout)
    safety = re.search(r"the data from before this restore is the safety backup (\S+); to go back to it: "
                       r"pyinfra inventory.py tasks/restore.py --data backup=(\S+)", out.stdout)
    assert safety and safety[1] == safety[2] and safety[1] in local_backups(vps)
    site.open()
    assert site.snapshot() == before
    assert remote_backups(bed) == [name]  # the safety backup stays on the server: never the newest offsite


def test_drill_passes_and_names_the_table_whose_rows_differ(bed):
    vps = bed["vps"]
    app = vps.exec("sh", "-c", "cd /opt/example && docker compose ps -q app").stdout
    dbs = databases(bed)
    out = task(bed, "tasks/restore.py", "--data", "drill=true")
    assert out.returncode == 0, out.stdout[-4000:]
    passed = re.search(r"drill: passed in \d+s: backup (\S+) \(offsite snapshot [0-9a-f]{8}\) restores; (\d+) tables, "
                       r"(\d+) rows as its manifest recorded; 2 media files match their checksums", out.stdout)
    assert passed and int(passed[2]) >= 5 and int(passed[3]) >= 3, out.stdout[-3000:]
    # Nothing live touched, nothing left behind.
    assert vps.exec("sh", "-c", "cd /opt/example && docker compose ps -q app").stdout == app
    assert databases(bed) == dbs and vps.exec("test", "-e", f"{BACKUPS}/.drill", check=False).returncode != 0

    name = local_backups(vps)[-1]
    manifest = f"{BACKUPS}/{name}/manifest.json"
    vps.exec("sed", "-i", "s/\"public.posts\": [0-9]*/\"public.posts\": 999/", manifest)
    bad = task(bed, "tasks/restore.py", "--data", "drill=true", "--data", "from=local")
    assert bad.returncode != 0
    assert re.search(rf"drill: FAILED: backup {name}: table public.posts has \d+ rows restored, its manifest recorded "
                     r"999", bad.stdout), bad.stdout[-3000:]
    assert databases(bed) == dbs
    vps.exec("rm", "-rf", f"{BACKUPS}/{name}")  # a backup whose manifest lies is no good to the later tests


def test_wrong_password_or_tampered_repository_is_refused_and_nothing_changes(bed, tmp_path):
    vps, site = bed["vps"], bed["site"]
    before, count = site.snapshot(), local_backups(vps)
    wrong = tmp_path / ".env"
    wrong.write_text(bed["env_file"].read_text().replace(PASSWORD, "not-the-password"))
    out = task(bed, "tasks/restore.py", "--data", "from=offsite", env_file=wrong)
    assert out.returncode != 0
    assert (f"the restic repository {bed['target']} does not open with RESTIC_PASSWORD from .env (wrong password): "
            "nothing was changed") in out.stdout
    assert site.snapshot() == before and local_backups(vps) == count

    # A copy of the repository with every data pack altered: restic refuses what it reads back.
    tampered = bed["repo"] + "-tampered"
    bed["box"].exec("sh", "-c", f"cp -a {bed['repo']} {tampered} && for f in $(find {tampered}/data -type f); do "
                    "printf 'XXXXXXXX' | dd of=$f bs=1 seek=64 conv=notrunc 2>/dev/null; done")
    target = f"sftp:storage@{bed['box'].name}:{tampered}"
    out = task(bed, "tasks/restore.py", "--data", "from=offsite", env={"VPSKIT_BACKUP_OFFSITE": target})
    assert out.returncode != 0
    assert re.search(rf"snapshot [0-9a-f]{{8}} of {re.escape(target)} (cannot be read back|came back with files that "
                     r"fail their checksums).*nothing was changed", out.stdout), out.stdout[-3000:]
    assert site.snapshot() == before and local_backups(vps) == count
    # The right password and repository back on the server (a deploy pushes this machine's configuration; the
    # lists only read) and the repository answers with them.
    assert task(bed, "deploy.py").returncode == 0
    assert task(bed, "tasks/backup.py", "--data", "list=offsite").returncode == 0


def test_unreachable_offsite_fails_loudly_keeps_the_local_backup_and_alerts_once(bed):
    vps, box, hook = bed["vps"], bed["box"], bed["hook"]
    hook.clear()
    box.exec("systemctl", "stop", "ssh.socket", "ssh.service", check=False)
    try:
        out = task(bed, "tasks/backup.py")
        assert out.returncode != 0
        name = local_backups(vps)[-1]
        assert f"backup {name} complete in" in out.stdout
        assert re.search(rf"cannot reach the restic repository {re.escape(bed['target'])} \(.+\): the local backup "
                         rf"{name} is kept", out.stdout), out.stdout[-3000:]
        assert hook.messages() == []  # a task run by hand reports to the person running it

        # The daily timer's unit: it fails, and the webhook hears about it once, naming app, host and cause.
        run = vps.exec("systemctl", "start", "vpskit-backup-example.service", check=False)
        assert run.returncode != 0
        assert vps.exec("systemctl", "show", "-p", "Result", "--value", "vpskit-backup-example.service"
                        ).stdout.strip() == "exit-code"
        messages = wait_until(hook.messages, 30, "the alert")
        assert len(messages) == 1
        body = messages[0]["body"]
        assert body["app"] == "example" and body["host"] == vps.name and body["event"] == "backup" and not body["ok"]
        assert f"cannot reach the restic repository {bed['target']}" in body["text"] and vps.name in body["text"]
        assert len(local_backups(vps)) >= 2  # both failed runs kept their local backup

        # Health: fine within the limit, failing on the offsite copy's age once a (short) limit has passed.
        ok = task(bed, "tasks/health.py")
        assert ok.returncode == 0 and re.search(r"ok +offsite: last copy \S+, snapshot [0-9a-f]{8}", ok.stdout)
        late = task(bed, "tasks/health.py", env={"VPSKIT_OFFSITE_MAX_AGE": "1s"})
        assert late.returncode != 0
        assert re.search(r"FAIL offsite: last copy \S+ is \d+h \d+m old \(limit", late.stdout), late.stdout[-2000:]
    finally:
        box.exec("systemctl", "start", "ssh.socket", "ssh.service", check=False)
    assert len(hook.messages()) == 1


def spells(hook) -> list[dict]:
    """The health check's failing and passing-again messages. Its pressure warnings ("health check: N OOM kill(s)
    ...") are left out here: a test VPS reads the test machine's kernel counters, which another module's OOM
    case moves (tests/e2e/test_small_server.py proves those warnings on a VPS of its own)."""
    return [m for m in hook.messages() if "health check failed" in m["body"]["text"]
            or "health check passes again" in m["body"]["text"]]


def test_scheduled_health_check_alerts_once_and_is_quiet_while_all_is_well(bed):
    vps, hook = bed["vps"], bed["hook"]
    assert task(bed, "tasks/backup.py").returncode == 0  # the box answers again: a fresh offsite copy
    hook.clear()
    unit = "vpskit-health-example.service"
    assert vps.exec("systemctl", "start", unit, check=False).returncode == 0, vps.exec(
        "journalctl", "-u", unit, "-n", "20", "--no-pager").stdout
    assert spells(hook) == []  # all is well: nothing sent

    # The database frozen (paused: the health timer starts again only a service found stopped, issue 23).
    vps.exec("sh", "-c", "cd /opt/example && docker compose pause db")
    try:
        for _ in range(2):
            assert vps.exec("systemctl", "start", unit, check=False).returncode != 0
        messages = spells(hook)
        assert len(messages) == 1, messages  # once per failure, not once per run
        assert "health check failed" in messages[0]["body"]["text"] and "db" in messages[0]["body"]["text"]
    finally:
        vps.exec("sh", "-c", "cd /opt/example && docker compose unpause db")
        unpaused = int(vps.exec("date", "+%s").stdout)
    # A Docker health probe started while the database was frozen can still fail after it thawed (the app turns
    # unhealthy a moment later): the wait is for a probe that started after the thaw and passed.
    wait_until(lambda: probed_healthy_since(vps, "app", unpaused), 120, "the app's health probe to pass again")
    wait_until(lambda: vps.exec("systemctl", "start", unit, check=False).returncode == 0, 120, "health to pass again")
    vps.exec("systemctl", "start", unit)
    texts = [m["body"]["text"] for m in spells(hook)]
    assert len(texts) == 2 and "health check passes again" in texts[1]
    bed["site"].open()


def test_a_release_is_announced_when_asked(bed):
    """notify_releases: one message per release with its result (a changed .env makes this deploy a release)."""
    hook = bed["hook"]
    hook.clear()
    # The module's .env gains the variable for good: the server keeps it, and later deploys must not drop it.
    bed["env_file"].write_text(bed["env_file"].read_text() + "SITE_BANNER=announced\n")
    out = task(bed, "deploy.py", env={"VPSKIT_NOTIFY_RELEASES": "true"})
    assert out.returncode == 0, out.stdout[-3000:]
    version = re.search(r"version (\S+) is serving", out.stdout)[1]
    messages = wait_until(hook.messages, 30, "the release message")
    assert len(messages) == 1
    body = messages[0]["body"]
    assert body["event"] == "release" and body["ok"] is True
    assert re.search(rf"release of {re.escape(version)} ok after \d+s", body["text"])
    bed["site"].open()


def test_backup_that_would_not_fit_is_refused_before_it_starts(bed):
    """The last backup's recorded size is larger than the free space: refused with both figures, nothing written."""
    vps = bed["vps"]
    count = local_backups(vps)
    manifest = f"{BACKUPS}/{count[-1]}/manifest.json"
    vps.exec("cp", manifest, "/root/manifest.json")
    vps.exec("sed", "-i", 's/"db_dump_bytes": [0-9]*/"db_dump_bytes": 900000000000000/', manifest)
    try:
        out = task(bed, "tasks/backup.py")
    finally:
        vps.exec("cp", "/root/manifest.json", manifest)
    assert out.returncode != 0
    assert re.search(rf"not enough disk space for a backup: \d+ MB free in {BACKUPS}, the last backup \({count[-1]}\) "
                     r"needed about \d+ MB; free space", out.stdout), out.stdout[-2000:]
    assert local_backups(vps) == count and vps.exec("sh", "-c", f"ls -a {BACKUPS} | grep -c partial",
                                                    check=False).stdout.strip() == "0"




def test_remote_retention_over_a_simulated_calendar_matches_local(bed):
    """99 daily backups here and offsite, the 100th real: the same daily/weekly/monthly set survives on both.
    (A repository on the server's disk, for speed: the rule is restic's forget, whatever the backend.)"""
    vps = bed["vps"]
    local = {"VPSKIT_BACKUP_OFFSITE": "/srv/retention-repo"}
    assert task(bed, "deploy.py", env=local).returncode == 0  # its configuration on the server
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(100)]
    names = [f"{d:%Y%m%d}T031500Z" for d in days]
    # 99 snapshots, 4 at a time (each restic run spends most of its time deriving the repository key).
    script = ("set -e; . /etc/vpskit/example/offsite.env; export TZ=UTC; restic init -q; mkdir -p /root/f; "
              "echo x > /root/f/x; cd /root/f; printf '%s\\n' " + " ".join(names[:-1]) + " | xargs -P 4 -I N sh -c "
              f"'mkdir -p {BACKUPS}/N && n=N && restic backup -q --host example --tag vpskit --tag backup=N "
              "--time \"$(echo $n | cut -c1-4)-$(echo $n | cut -c5-6)-$(echo $n | cut -c7-8) 03:15:00\" .'")
    vps.exec("rm", "-rf", f"{BACKUPS}")
    vps.exec("bash", "-c", script)
    assert len(remote_backups(bed)) == 99
    run = vps.exec("sh", "-c", f"cd /opt/example && VPSKIT_BACKUP_TIME={names[-1]} bin/vpskit-server backup "
                   f"--app-dir /opt/example --backups {BACKUPS} --keep 7 4 6 2>&1", check=False)
    assert run.returncode == 0, run.stdout[-2000:]
    expected = sorted(f"{d:%Y%m%d}T031500Z" for d in expected_retention(days))
    assert local_backups(vps) == expected
    assert remote_backups(bed) == expected
    assert task(bed, "deploy.py").returncode == 0  # the sftp configuration back


def test_no_secret_in_the_journal(bed):
    journal = bed["vps"].exec("journalctl", "--no-pager", "-o", "cat").stdout
    assert "vpskit backup" in journal  # the timer's runs are in it
    assert secrets_anywhere(bed, journal) == []
