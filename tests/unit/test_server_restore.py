"""A restore (vpskit/server/restore.py) against a recorded Docker world and a real backup folder: the order that
keeps the site serving until the swap, and each failure's outcome (the live data kept, the app started again on
what it reads now, and the line that says so)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from tests.unit.server_fakes import Container, FakeEffects, World
from tests.unit.test_drill_space import backup
from vpskit.server.effects import Result
from vpskit.server.proxy import Proxy, route_text
from vpskit.server.restore import Restore, newer_dump, swap_sql

SAFETY = "20261206T101500Z"


class DbWorld(FakeEffects):
    """The recorded world with the database's answers, recording each SQL statement; `fail` holds substrings of
    commands (or statements) that fail."""

    def __init__(self, w: World, fail: tuple[str, ...] = (), server: str = "17.6"):
        super().__init__(w)
        self.fail, self.sql, self.server = fail, [], server

    def run(self, *args, input=None, **kw):  # noqa: A002
        line = " ".join(args)
        bad = any(f in line for f in self.fail)
        if args[1:2] == ("backup",):
            self.w.calls.append(args)
            return Result(0, f"{SAFETY}\n")
        if "show server_version" in line:
            return Result(0, f"{self.server}\n")
        if 'printf %s "$PGDATABASE"' in line:
            return Result(0, "payload")
        if "pg_stat_activity where datname" in line:
            return Result(0, "0\n")
        if "/swap.sh" in line:
            self.w.calls.append(("media", args[-1]))
            return Result(1, "", "mv: cannot move\n") if bad else Result(0)
        if "psql" in line or "pg_restore" in line:
            self.w.calls.append(("db", line))
            self.sql += [a for a in args if a.startswith(("ALTER", "DROP", "CREATE", "SELECT pg_terminate"))]
            return Result(1, "", "ERROR: stand-in failure\n") if bad else Result(0)
        if args[:3] == ("docker", "compose", "stop") or args[:3] == ("docker", "compose", "start") or \
                args[:4] == ("docker", "compose", "up", "-d"):
            self.w.calls.append(("app", args[2]))
            for c in self.w.of("app"):
                c.status = "exited" if args[2] == "stop" else "running"
            return Result(0)
        return super().run(*args, input=input, **kw)


def restore(tmp_path: Path, fail: tuple[str, ...] = (), lock_wait: int = 5, taken_on: str = "17.6",
            server: str = "17.6", proxy: Path | None = None) -> tuple[int, DbWorld]:
    app, root = tmp_path / "example", tmp_path / "backups"
    app.mkdir(exist_ok=True)
    (app / ".env").write_text('POSTGRES_USER="payload"\n')
    (app / "docker-compose.yml").write_text("name: example\nservices: {}\n")
    if not root.exists():
        backup(root, {"a.png": b"a"})
        (root / "20261205T031500Z" / "manifest.json").write_text(  # not in SHA256SUMS: rewritten freely
            '{"tables": {"public.posts": 3}, "media_files": 1, "app_version": "v1", '
            f'"postgres_version": "{taken_on}"}}\n')
    fx = DbWorld(World(containers=[Container("c1", "example-app-1", "app"), Container("c2", "example-db-1", "db")]),
                 fail, server)
    os.environ["VPSKIT_OFFSITE_CONF"] = str(tmp_path / "none.env")
    run = Restore(app, root, "latest", "local", fx, tmp_path / "bin", lock_wait=lock_wait)
    run.proxy = Proxy(fx, proxy or tmp_path / "no-proxy")
    code = run.run()
    return code, fx


def events(fx: DbWorld) -> list[str]:
    """What happened, in order: the safety backup, the app's stops and starts, media steps, renames."""
    out = []
    for c in fx.w.calls:
        if c[1:2] == ("backup",):
            out.append("safety backup")
        elif c[0] in ("app", "media"):
            out.append(f"{c[0]} {c[1]}")
        elif c[0] == "db" and "RENAME" in c[1]:
            out.append("renames")
        elif c[0] == "db" and "pg_restore -d" in c[1]:
            out.append("scratch restore")
    return out


def test_a_restore_swaps_in_with_the_app_stopped_only_for_the_swap(tmp_path):
    code, fx = restore(tmp_path)
    assert code == 0, fx.w.said
    assert events(fx) == ["safety backup", "scratch restore", "media unpack", "app stop", "renames", "media swap",
                          "app up"]
    assert swap_sql("payload", "payload_restore", "payload_before_restore") == [
        'ALTER DATABASE "payload" RENAME TO "payload_before_restore"',
        'ALTER DATABASE "payload_restore" RENAME TO "payload"']
    assert fx.sql[-1] == 'DROP DATABASE IF EXISTS "payload_before_restore"'
    assert fx.w.said[-2] == ("vpskit restore: restored backup 20261205T031500Z: 1 media files; the app version it "
                             "was taken with: v1")
    assert fx.w.said[-1].endswith(f"to go back to it: pyinfra inventory.py tasks/restore.py --data backup={SAFETY}")


def test_a_dump_that_does_not_restore_changes_nothing_live(tmp_path):
    code, fx = restore(tmp_path, fail=('pg_restore -d "$1"',))
    assert code == 1
    assert fx.w.said[-1] == ("vpskit restore: pg_restore into the scratch database failed: the live database is "
                             "unchanged")
    assert "app stop" not in events(fx)
    assert fx.sql[-1] == 'DROP DATABASE IF EXISTS "payload_restore"'  # the scratch copy goes


def test_a_swap_that_fails_starts_the_app_again_on_the_data_it_had(tmp_path):
    code, fx = restore(tmp_path, fail=("RENAME TO",))
    assert code == 1
    assert events(fx)[-3:] == ["renames", "app start", "media undo"]  # the unpacked media go too
    assert fx.w.said[-1].endswith("swapping the restored database in failed (above): the live database is "
                                  "unchanged; the app serves the data it had")
    assert 'ALTER DATABASE "payload" WITH ALLOW_CONNECTIONS true' in fx.sql  # connections allowed again


def test_a_media_swap_that_fails_puts_the_database_from_before_back(tmp_path):
    code, fx = restore(tmp_path, fail=("/swap.sh swap",))
    assert code == 1
    assert events(fx)[-5:] == ["renames", "media swap", "media undo", "renames", "app start"]
    back = [s for s in fx.sql if "RENAME" in s][-2:]
    assert back == swap_sql("payload", "payload_before_restore", "payload_restore")
    assert fx.w.said[-1].endswith("the database and the media are as they were before this restore; the app "
                                  "serves the data it had")


def test_a_corrupt_backup_is_refused_before_the_safety_backup(tmp_path):
    root = tmp_path / "backups"
    b = backup(root, {"a.png": b"a"})
    (b / "db.dump").write_bytes(b"changed")
    code, fx = restore(tmp_path)
    assert code == 1 and fx.w.said[-1].endswith("is corrupt (checksum mismatch): nothing was changed")
    assert events(fx) == []


def test_a_held_app_lock_refuses_with_the_holder(tmp_path):
    app = tmp_path / "example"
    app.mkdir()
    fd = os.open(app / ".vpskit.lock", os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    (app / ".vpskit.lock.holder").write_text("release of v2 by ann, since now\n")
    try:
        code, fx = restore(tmp_path, lock_wait=2)
    finally:
        os.close(fd)
    assert code == 1 and "still holds its lock after 2s (release of v2 by ann" in fx.w.said[-1]
    assert events(fx) == []


@pytest.fixture(autouse=True)
def _no_conf():
    yield
    os.environ.pop("VPSKIT_OFFSITE_CONF", None)


def test_a_backup_of_a_newer_major_is_refused_before_anything_changes(tmp_path):
    code, fx = restore(tmp_path, taken_on="18.1", server="17.6")
    assert code == 1
    assert fx.w.said[-1] == ("vpskit restore: backup 20261205T031500Z was taken from PostgreSQL 18, newer than this "
                             "server's PostgreSQL 17, which cannot restore it: restore it on a PostgreSQL 18 server "
                             "(postgres_image); nothing was changed")
    assert events(fx) == []  # not even the safety backup


def test_a_backup_of_an_older_major_restores_into_a_newer_one(tmp_path):
    code, fx = restore(tmp_path, taken_on="15.8", server="17.6")
    assert code == 0, fx.w.said
    assert "scratch restore" in events(fx)


@pytest.mark.parametrize(("manifest", "server", "refused"), [
    ('{"postgres_version": "17.6"}', "17.2", False),
    ('{"postgres_version": "10.1"}', "9.6.24", True),
    ('{"postgres_version": "9.6.24"}', "10.1", False),
    ("{}", "17.6", False),  # a backup taken by an older vpskit says no version: pg_restore is the judge
    ("not json", "17.6", False),
    ('{"postgres_version": "18.0"}', "", False),  # the server did not say
])
def test_which_dumps_are_newer(manifest, server, refused):
    assert bool(newer_dump(manifest, server, "b")) is refused


def closed_site(tmp_path: Path) -> Path:
    """The app behind vpskit's proxy (its route live, its maintenance page in its folder): the proxy's folder."""
    app, root = tmp_path / "example", tmp_path / "proxy"
    app.mkdir(exist_ok=True)
    route = "http://:3000 {\n\treverse_proxy @UPSTREAM@ example-app:3000\n}\n"
    (app / "proxy-route.caddy").write_text(route)
    (app / "maintenance.html").write_text("<h1>Back soon</h1>\n")
    (root / "etc" / "sites").mkdir(parents=True)
    (root / "etc" / "sites" / "example.caddy").write_text(route.replace("@UPSTREAM@", "example-app-1:3000"))
    return root


@pytest.mark.parametrize("fail", [(), ("RENAME TO",)], ids=["restored", "swap failed"])
def test_the_site_shows_the_maintenance_page_while_the_app_is_stopped_and_opens_again(tmp_path, fail):
    root = closed_site(tmp_path)
    code, fx = restore(tmp_path, fail=fail, proxy=root)
    assert code == (1 if fail else 0), fx.w.said
    said = [line.split(":", 1)[1].strip() for line in fx.w.said if line.startswith("vpskit maintenance:")]
    assert said[0].startswith("example is closed") and said[0].endswith("until the restore ends")
    assert said[-1].startswith("example is open again")
    closing = next(i for i, c in enumerate(fx.w.calls) if "reload" in c)
    stopping = fx.w.calls.index(("app", "stop"))
    assert closing < stopping  # closed before the app stops
    assert "vpskit_closed" not in (root / "etc" / "sites" / "example.caddy").read_text()  # open: the page unserved


def test_a_site_the_operator_closed_stays_closed_after_the_restore(tmp_path):
    root = closed_site(tmp_path)
    (root / "etc" / "maintenance").mkdir()
    (root / "etc" / "maintenance" / "example.html").write_text("<h1>Closed by the operator</h1>\n")
    site = root / "etc" / "sites" / "example.caddy"
    site.write_text(route_text((tmp_path / "example" / "proxy-route.caddy").read_text(), "example-app-1:3000",
                               "example"))  # tasks/maintenance.py --data on=true
    code, fx = restore(tmp_path, proxy=root)
    assert code == 0, fx.w.said
    assert (root / "etc" / "maintenance" / "example.html").read_text() == "<h1>Closed by the operator</h1>\n"
    assert not any(line.startswith("vpskit maintenance:") for line in fx.w.said)
