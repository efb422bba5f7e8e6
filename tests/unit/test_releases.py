"""Releases kept for rollback (review items 4, 8 and 10): numbered by attempt, so a settings-only release is a
release of its own; what a rollback goes back to (vpskit/releases.py); today's secrets kept when an older
release's .env comes back (vpskit/server/history.py); an older vpskit's releases numbered in the order the fact
reads them. The server's side of releases: tests/unit/test_server_release.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vpskit import commands, envfile, settings
from vpskit.facts import ReleaseHistory
from vpskit.releases import History, Release
from vpskit.render import render
from vpskit.server.history import upgrade_older, with_current_secrets
from vpskit.settings import SettingsError


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
    upgrade_older(rel, tmp_path / "current")
    upgrade_older(rel, tmp_path / "current")  # once only
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
    out = with_current_secrets((tmp_path / "old.env").read_text(), (tmp_path / ".env").read_text())
    lines = out.splitlines()
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    assert values["PAYLOAD_SECRET"] == f'"{"rotated" * 6}"'  # today's secret, never the leaked one
    assert values["SMTP_HOST"] == '"old-mail"'  # the release's own settings
    assert values["NEW_API_KEY"] == '"k2"' and values["GONE_TOKEN"] == '"t"'
    assert "leaked" not in out
    # Today's header, once, before the variables.
    assert [ln for ln in lines if ln.startswith("# vpskit ")] == [
        ln for ln in (tmp_path / ".env").read_text().splitlines() if ln.startswith("# vpskit ")]
    assert lines.index(next(ln for ln in lines if ln.startswith(envfile.SECRET_HEADER))) < lines.index(
        next(ln for ln in lines if ln.startswith("PAYLOAD_SECRET=")))
