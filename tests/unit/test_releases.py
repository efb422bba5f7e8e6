"""Releases kept for rollback (review items 4, 8 and 10): numbered by attempt, so a settings-only release is a
release of its own; what a rollback goes back to (vpskit/releases.py); today's secrets kept when an older
release's .env comes back, and the kept copies scrubbed of rotated ones (files/common.sh, run here with bash on
files); an older vpskit's releases numbered in the order the fact reads them; and `follow` when the release
process ends without a result."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from vpskit import commands, envfile, settings
from vpskit.facts import ReleaseHistory
from vpskit.releases import History, Release
from vpskit.render import render
from vpskit.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
COMMON, RELEASE = ROOT / "files" / "common.sh", ROOT / "files" / "release.sh"


def history(*rows: tuple[int, str, int | None], current: int) -> History:
    return History(tuple(Release(n, v, f"c{n}", came, "") for n, v, came in rows), current)


def test_a_rollback_goes_back_along_what_served_before_never_back_and_forth():
    # 1: v1; 2: v2; 3: v2 with other settings (a settings-only release is a release of its own).
    h = history((1, "v1", None), (2, "v2", 1), (3, "v2", 2), current=3)
    assert h.rollback_target().number == 2  # the settings before, not an older version
    h = history((1, "v1", None), (2, "v2", 1), (3, "v2", 2), current=2)  # after that rollback
    assert h.rollback_target().number == 1  # further back, not to 3 again
    h = history((1, "v1", None), (2, "v2", 1), (3, "v2", 2), (4, "v3", 1), current=4)  # v3 released from 1
    assert h.rollback_target().number == 1


def test_a_rollback_to_a_version_takes_its_newest_release_and_refusals_name_what_is_kept():
    h = history((1, "v1", None), (2, "v1", 1), (3, "v2", 2), current=3)
    assert h.rollback_target("v1").number == 2
    with pytest.raises(SettingsError, match=r"no release of version v9 kept to roll back to \(kept: 1 \(v1\), 2 "):
        h.rollback_target("v9")
    with pytest.raises(SettingsError, match="no release before release 1 .* is kept to roll back to"):
        history((1, "v1", None), current=1).rollback_target()
    with pytest.raises(SettingsError, match="deploy first"):
        History((), None).rollback_target()
    # The one served before was pruned (keep_images): the newest older one kept.
    assert history((3, "v3", 2), (5, "v5", 4), current=5).rollback_target().number == 3


def fact(folder: Path) -> History:
    out = subprocess.run(["bash", "-c", commands.release_history(str(folder))], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, out.stderr
    return ReleaseHistory().process(out.stdout.splitlines())


def bash(folder: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f'set -euo pipefail; . "{COMMON}"; {script}'], cwd=folder,
                          capture_output=True, text=True, timeout=30)


def test_the_releases_an_older_vpskit_kept_are_numbered_as_the_fact_reads_them(tmp_path):
    rel = tmp_path / "releases"
    rel.mkdir()
    for i, version in enumerate(["v1", "2", "v3"]):  # a version named like a number does not collide
        for ext in ("yml", "env", "caddy"):
            (rel / f"{version}.{ext}").write_text(f"{version} {ext}\n")
            os.utime(rel / f"{version}.{ext}", (1_000_000 + i * 100, 1_000_000 + i * 100))
    (tmp_path / "current").write_text("2\n")
    before = fact(tmp_path)
    assert [(r.number, r.version) for r in before.releases] == [(1, "v1"), (2, "2"), (3, "v3")]
    assert before.current == 2 and before.rollback_target().version == "v1"
    out = bash(tmp_path, "upgrade_releases && upgrade_releases")  # once only
    assert out.returncode == 0, out.stderr
    after = fact(tmp_path)
    assert after == History(tuple(Release(r.number, r.version, "-", r.came_after, after.releases[i].at)
                                  for i, r in enumerate(before.releases)), 2)
    assert (rel / "2.yml").read_text() == "2 yml\n" and (rel / "1.env").read_text() == "v1 env\n"
    assert (rel / "3.caddy").read_text() == "v3 caddy\n" and not (rel / "v3.yml").exists()


def server_env(values: dict) -> str:
    s = settings.load({})
    env = envfile.server_env(values, s)
    return render(".env", **s, env=env, env_header=envfile.header(values, env))


def test_an_older_releases_env_comes_back_with_todays_secrets(tmp_path):
    old = {"POSTGRES_PASSWORD": "pw", "PAYLOAD_SECRET": "leaked" * 7, "SMTP_HOST": "old-mail", "GONE_TOKEN": "t"}
    now = {"POSTGRES_PASSWORD": "pw", "PAYLOAD_SECRET": "rotated" * 6, "SMTP_HOST": "new-mail",
           "NEW_API_KEY": "k2"}
    (tmp_path / "old.env").write_text(server_env(old))
    (tmp_path / ".env").write_text(server_env(now))
    out = bash(tmp_path, "with_current_secrets old.env .env")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    assert values["PAYLOAD_SECRET"] == f'"{"rotated" * 6}"'  # today's secret, never the leaked one
    assert values["SMTP_HOST"] == '"old-mail"'  # the release's own settings
    assert values["NEW_API_KEY"] == '"k2"' and values["GONE_TOKEN"] == '"t"'
    assert "leaked" not in out.stdout
    # Today's header, once, before the variables.
    assert [ln for ln in lines if ln.startswith("# vpskit ")] == [
        ln for ln in (tmp_path / ".env").read_text().splitlines() if ln.startswith("# vpskit ")]
    assert lines.index(next(ln for ln in lines if ln.startswith(envfile.SECRET_HEADER))) < lines.index(
        next(ln for ln in lines if ln.startswith("PAYLOAD_SECRET=")))


def test_the_header_the_shell_reads_is_the_one_python_writes():
    assert f"SECRETS_HEADER='{envfile.SECRET_HEADER}'" in COMMON.read_text()


def test_follow_records_a_release_whose_process_ended_without_a_result(tmp_path):
    attempts = tmp_path / "releases" / "attempts"
    (attempts / "A9").mkdir(parents=True)
    (attempts / "A9.log").write_text("vpskit release: started example-app-2\n")
    (attempts / "A9" / "params").write_text("VERSION=v7\nHASH=abcdef0123456789\nWHO=ann\nKIND=release\n")
    gone = subprocess.Popen(["true"])
    gone.wait()
    (attempts / "A9.pid").write_text(f"{gone.pid}\n")  # the process is gone and wrote no status
    start = time.monotonic()
    out = subprocess.run(["bash", str(RELEASE), "follow", str(tmp_path), "A9"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1 and time.monotonic() - start < 10
    assert "started example-app-2" in out.stderr
    assert "release attempt A9 ended without a result" in out.stderr
    log = (tmp_path / "releases" / "log").read_text().split("\t")
    assert log[1:5] == ["v7", "abcdef012345", "ann", "release:failed"]
    assert (attempts / "A9.status").read_text() == "1\n"


def test_follow_stops_following_after_its_limit_while_the_release_goes_on(tmp_path):
    attempts = tmp_path / "releases" / "attempts"
    attempts.mkdir(parents=True)
    running = subprocess.Popen(["sleep", "60"])
    try:
        (attempts / "A8.pid").write_text(f"{running.pid}\n")
        out = subprocess.run(["bash", str(RELEASE), "follow", str(tmp_path), "A8", "3"], capture_output=True,
                             text=True, timeout=30)
    finally:
        running.kill()
    assert out.returncode == 1 and "still running on the server after 3s: stopped following it" in out.stderr
    assert not (attempts / "A8.status").exists()
