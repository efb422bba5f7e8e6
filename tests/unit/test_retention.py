"""The retention rule (vpskit/server/backups.py gfs_keep), which prunes the backups on the server (vpskit-server
backup) and the offsite copies (vpskit/server/offsite.py) alike: calendars worked out by
hand, and what must hold on any calendar."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
from pathlib import Path

import pytest

from vpskit.server.backups import gfs_keep

PROGRAM = Path(__file__).resolve().parents[2] / "files" / "vpskit-server"


def test_the_newest_of_each_day_and_everything_of_the_last_24_hours():
    names = ["20261201T031500Z", "20261202T031500Z", "20261203T031500Z", "20261203T150000Z",  # pre-update
             "20261204T031500Z", "20261204T120000Z"]
    assert gfs_keep("20261204T120000Z", names, 2, 0, 0) == ["20261204T120000Z", "20261204T031500Z",
                                                           "20261203T150000Z"]
    # With 3 days: the 3rd is Dec 2; Dec 3's earlier backup is neither its day's newest nor within 24 hours.
    assert gfs_keep("20261204T120000Z", names, 3, 0, 0) == ["20261204T120000Z", "20261204T031500Z",
                                                           "20261203T150000Z", "20261202T031500Z"]


def test_weeks_and_months_reach_further_back_than_days():
    names = ["20260915T031500Z", "20261030T031500Z", "20261031T031500Z", "20261117T031500Z", "20261124T031500Z",
             "20261201T031500Z"]
    # 1 day (Dec 1), 2 ISO weeks (Dec 1's week, Nov 24's week), 3 months (Dec, Nov's newest, Oct's newest).
    assert gfs_keep("20261201T031500Z", names, 1, 2, 3) == ["20261201T031500Z", "20261124T031500Z",
                                                           "20261031T031500Z"]


def test_the_newest_is_kept_whatever_the_policy_and_other_names_are_ignored():
    assert gfs_keep("20261210T000000Z", ["20261201T031500Z", "x.partial", "lost+found"], 0, 0, 0) == [
        "20261201T031500Z"]


@pytest.mark.parametrize(("daily", "weekly", "monthly", "seed"), [(7, 4, 6, 1), (3, 0, 2, 2), (1, 1, 1, 3)])
def test_on_any_calendar_the_policy_bounds_what_is_kept(daily, weekly, monthly, seed):
    rng = random.Random(seed)  # noqa: S311 - a repeatable calendar, not a secret
    start = dt.datetime(2025, 11, 20, 3, 15)
    times = sorted({start + dt.timedelta(days=d, hours=rng.choice([0, 0, 0, 9, 20])) for d in range(160)
                    if rng.random() < 0.8})
    names = [f"{t:%Y%m%dT%H%M%S}Z" for t in times]
    kept = gfs_keep(names[-1], rng.sample(names, len(names)), daily, weekly, monthly)
    assert kept == sorted(kept, reverse=True) and kept[0] == names[-1]
    recent = [n for n, t in zip(names, times, strict=True) if t > times[-1] - dt.timedelta(hours=24)]
    assert set(recent) <= set(kept)
    assert len(kept) <= daily + weekly + monthly + len(recent) + 1
    assert len({n[:8] for n in kept}) >= min(daily, len({n[:8] for n in names}))
    # The command line gives the same answer (vpskit-server backups keep).
    out = subprocess.run([str(PROGRAM), "backups", "keep", names[-1], str(daily), str(weekly), str(monthly)],
                         input="\n".join(names) + "\n", capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.split() == kept
