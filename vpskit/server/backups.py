"""Backups on the server: which ones a retention policy keeps. One rule for the backups on the server
(backup.py) and the offsite copies (offsite.py)."""

from __future__ import annotations

import datetime as dt
import re

NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")  # a backup's name: its UTC time, so name order is time order


def when(name: str) -> dt.datetime:
    return dt.datetime.strptime(name, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def gfs_keep(now: str, names: list[str], daily: int, weekly: int, monthly: int) -> list[str]:
    """The backups kept, newest first: the newest of each of the last `daily` days, `weekly` ISO weeks and
    `monthly` months, every backup of the 24 hours before `now` (a pre-update backup beside the daily one), and
    the newest one. Names that are not backup names are ignored."""
    recent = when(now) - dt.timedelta(hours=24)
    seen: dict[str, set] = {"day": set(), "week": set(), "month": set()}
    limits = {"day": daily, "week": weekly, "month": monthly}
    kept = []
    for i, name in enumerate(sorted({n for n in names if NAME.match(n)}, reverse=True)):
        t = when(name)
        keys = {"day": t.date(), "week": t.isocalendar()[:2], "month": (t.year, t.month)}
        keep = i == 0 or t > recent
        for period, key in keys.items():
            if key not in seen[period] and len(seen[period]) < limits[period]:
                seen[period].add(key)
                keep = True
        if keep:
            kept.append(name)
    return kept
