"""The health check's verdicts (vpskit/server/healthcheck.py), each from recorded readings: the disk's, memory's,
the last backup's and the last offsite copy's, and the reason a failing route gives."""

import datetime as dt

from vpskit.server.healthcheck import backup_age, disk, kv, memory, offsite_age, reason_of


def test_disk_fails_below_a_gib_or_a_tenth_free():
    assert disk(5 * 2**20, 50) == ("ok", "5120 MB free (50%)")
    assert disk(900 * 1024, 50)[0] == "FAIL" and disk(20 * 2**20, 9)[0] == "FAIL"
    assert disk(900 * 1024, 50)[1].endswith("below 1024 MB or 10%): prune images or grow the disk")


def test_memory_fails_below_five_percent_available():
    assert memory(kv("MemTotal: 1000000 kB\nMemAvailable: 500000 kB\n")) == ("ok", "488 MB available of 976 MB")
    assert memory(kv("MemTotal: 1000000 kB\nMemAvailable: 40000 kB\n"))[0] == "FAIL"


def test_backup_and_offsite_ages_against_their_limits():
    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    assert backup_age(["20261206T031500Z", ".lock", "20261205T031500Z"], now, 26, "/b") == (
        "ok", "last 20261206T031500Z (8h ago)")
    assert backup_age(["20261204T031500Z"], now, 26, "/b") == ("FAIL", "last 20261204T031500Z is 56h old (limit 26h)")
    assert backup_age([], now, 26, "/b") == ("FAIL", "no backup in /b yet: run tasks/backup.py")
    t = int(now.timestamp())
    assert offsite_age(f"20261206T031500Z 0123456789ab {t - 3700}", t, 172800) == (
        "ok", "last copy 20261206T031500Z, snapshot 01234567 (1h 1m ago)")
    assert offsite_age(f"20261201T031500Z 0123456789ab {t - 200000}", t, 172800)[0] == "FAIL"
    assert offsite_age(None, t, 172800) == ("FAIL", "no offsite copy yet: run tasks/backup.py")


def test_a_failing_route_gives_its_reason():
    assert reason_of('{"status":"not ready","reason":"the database lacks 1 table(s)"}') == \
        "the database lacks 1 table(s)"
    assert reason_of("<html>") == ""


def test_a_database_made_under_another_collation_version_fails_with_what_to_run():
    from vpskit.server.healthcheck import collation

    assert collation("payload 2.36 2.36\npostgres 2.36 2.36\n") == (
        "ok", "every database's collation version is the library's")
    assert collation("") == ("ok", "every database's collation version is the library's")
    kind, detail = collation("payload 2.36 2.41\npostgres 2.36 2.41\ntemplate1 2.41 2.41\n")
    assert kind == "FAIL"
    assert detail == ("database payload was made with collation version 2.36, the image's library now has 2.41 (and 1 "
                      "more database(s)): its text indexes may give wrong answers until rebuilt: REINDEX DATABASE "
                      "payload; ALTER DATABASE payload REFRESH COLLATION VERSION (docs/TROUBLESHOOTING.md #57)")
