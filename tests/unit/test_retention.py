"""The retention rule of files/common.sh (gfs_keep), which prunes the backups on the server and the offsite
copies alike, against the rule written out here: over a simulated calendar with irregular backups."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
from pathlib import Path

import pytest

COMMON = Path(__file__).resolve().parents[2] / "files" / "common.sh"


def gfs_keep(now: str, names: list[str], daily: int, weekly: int, monthly: int) -> list[str]:
    out = subprocess.run(["bash", "-c", f'. "{COMMON}" && gfs_keep "$@"', "gfs_keep", now, str(daily), str(weekly),
                          str(monthly)], input="\n".join(names) + "\n", capture_output=True, text=True, check=True)
    return out.stdout.split()


def expected(now: dt.datetime, times: list[dt.datetime], daily: int, weekly: int, monthly: int) -> set[dt.datetime]:
    keep, days, weeks, months = {max(times)}, set(), set(), set()
    for t in sorted(times, reverse=True):
        if t > now - dt.timedelta(hours=24):
            keep.add(t)
        for seen, key, limit in ((days, t.date(), daily), (weeks, t.isocalendar()[:2], weekly),
                                 (months, (t.year, t.month), monthly)):
            if key not in seen and len(seen) < limit:
                seen.add(key)
                keep.add(t)
    return keep


@pytest.mark.parametrize(("daily", "weekly", "monthly", "seed"), [(7, 4, 6, 1), (3, 0, 2, 2), (1, 1, 1, 3),
                                                                  (14, 8, 12, 4)])
def test_the_shell_rule_is_the_written_rule(daily, weekly, monthly, seed):
    rng = random.Random(seed)  # noqa: S311 - a repeatable calendar, not a secret
    start = dt.datetime(2025, 11, 20, 3, 15)
    times = sorted({start + dt.timedelta(days=d, hours=rng.choice([0, 0, 0, 9, 20])) for d in range(160)
                    if rng.random() < 0.8})
    times.append(times[-1] + dt.timedelta(hours=5))  # a pre-update backup beside the daily one
    names = [f"{t:%Y%m%dT%H%M%S}Z" for t in times]
    now = times[-1]
    kept = gfs_keep(names[-1], rng.sample(names, len(names)), daily, weekly, monthly)
    assert kept == sorted((f"{t:%Y%m%dT%H%M%S}Z" for t in expected(now, times, daily, weekly, monthly)),
                          reverse=True)
