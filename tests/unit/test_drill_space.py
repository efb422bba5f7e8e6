"""The restore drill (vpskit/server/drill.py) checks for room before it restores anything (review item 12), and
compares what it restored with what the backup recorded: run against a real backup folder and a recorded Docker
world (a live database of 3 GB, a disk with 100 MB free)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.unit.server_fakes import Container, FakeEffects, World
from vpskit.server import drill as drill_module
from vpskit.server.drill import Drill, DrillFailed, recorded_rows, room, row_mismatches
from vpskit.server.effects import Result


def backup(root: Path, media: dict[str, bytes], tables: str = '{"public.posts": 3, "public.\\"Users\\"": 1}',
           corrupt: bool = False) -> Path:
    b = root / "20261205T031500Z"
    b.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in media.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  ./{n}\n" for n, d in media.items())
    if corrupt:
        sums = sums.replace(sums[:8], "00000000", 1)
    files = {"db.dump": b"PGDMP fake", "media.tar": buf.getvalue(), "media.sha256": sums.encode()}
    for name, data in files.items():
        (b / name).write_bytes(data)
    (b / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    (b / "manifest.json").write_text(f'{{"tables": {tables}}}\n')
    return b


class DbWorld(FakeEffects):
    """The recorded world, with psql answers for the drill: the live size, CREATE DATABASE, the counts."""

    def __init__(self, w: World, counts: str = "3\n1\n"):
        super().__init__(w)
        self.counts = counts

    def run(self, *args, input=None, **kw):  # noqa: A002
        line = " ".join(args)
        if "pg_database_size" in line:
            return Result(0, "3000000000\n")
        if args[0] == "tar":
            self.w.calls.append(args)
            with tarfile.open(args[-1]) as tar:
                tar.extractall(args[2], filter="data")
            return Result(0)
        if "psql" in line and input and "count(*)" in input:
            self.w.calls.append((*args, input))
            return Result(0, self.counts)
        if "psql" in line and input:
            self.w.calls.append((*args, input))
            return Result(0)
        return super().run(*args, input=input, **kw)


def run_drill(tmp_path, world: DbWorld, free: int) -> tuple[int, list[str]]:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / ".env").write_text('POSTGRES_USER="payload"\n')
    drill_module.free_mb = lambda path: free
    code = Drill(app, tmp_path / "backups", "latest", "local", world, tmp_path / "bin").run()
    return code, world.w.said


@pytest.fixture
def world():
    return DbWorld(World(containers=[Container("c0ffee", "example-db-1", "db")]))


def test_a_drill_without_room_for_its_scratch_copies_stops_before_restoring(tmp_path, world, monkeypatch):
    monkeypatch.setattr(drill_module, "free_mb", drill_module.free_mb)
    backup(tmp_path / "backups", {"a.png": os.urandom(4096)})
    code, said = run_drill(tmp_path, world, 100)
    assert code == 1
    assert "not enough disk space for the drill: 100 MB free in" in said[-1] and "nothing was restored" in said[-1]
    assert not any("CREATE DATABASE" in str(c) for c in world.w.calls)
    assert not (tmp_path / "backups" / ".drill").exists()


def test_with_room_the_drill_restores_counts_and_checks_every_media_file(tmp_path, world, monkeypatch):
    monkeypatch.setattr(drill_module, "free_mb", drill_module.free_mb)
    backup(tmp_path / "backups", {"a.png": b"a" * 10, "b/c.png": b"c" * 20})
    code, said = run_drill(tmp_path, world, 900000)
    assert code == 0, said
    assert said[-1].startswith("vpskit drill: passed in 0s: backup 20261205T031500Z restores; 2 tables, 4 rows")
    assert said[-1].endswith("2 media files match their checksums")
    assert any('CREATE DATABASE "_drill"' in str(c) for c in world.w.calls)
    assert any('DROP DATABASE IF EXISTS "_drill"' in str(c) for c in world.w.calls[-3:])  # removed afterwards


def test_a_table_whose_rows_differ_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(drill_module, "free_mb", drill_module.free_mb)
    w = DbWorld(World(containers=[Container("c0ffee", "example-db-1", "db")]), counts="2\n1\n")
    backup(tmp_path / "backups", {"a.png": b"a"})
    code, said = run_drill(tmp_path, w, 900000)
    assert code == 1
    assert said[-1] == ("vpskit drill: FAILED: backup 20261205T031500Z: table public.posts has 2 rows restored, its "
                        "manifest recorded 3 (differing: public.posts)")


def test_a_media_file_that_differs_fails_the_drill(tmp_path, world, monkeypatch):
    monkeypatch.setattr(drill_module, "free_mb", drill_module.free_mb)
    b = backup(tmp_path / "backups", {"a.png": b"a", "b.png": b"b"}, corrupt=True)
    code, said = run_drill(tmp_path, world, 900000)
    assert code == 1 and said[-1].endswith("1 of 2 media files do not match their checksums")
    (b / "db.dump").write_bytes(b"PGDMP changed")  # and a backup whose own checksums fail is not restored at all
    code, said = run_drill(tmp_path, world, 900000)
    assert code == 1 and said[-1].endswith("backup 20261205T031500Z is corrupt (checksum mismatch)")


def test_room_and_manifest_rules():
    assert room(3 * 2**30, 4096, "/var/lib/docker", "/b", True, 50, 100).need == int(3 * 2**30 * 1.2 / 2**20 + 1) + 1
    assert room(10 * 2**20, 50 * 2**20, "/d", "/b", False, 5, 1000).where == "/d"  # the database's disk is short
    assert room(10 * 2**20, 50 * 2**20, "/d", "/b", False, 500, 1000).where == "/b"
    assert recorded_rows('{"tables": {"public.posts": 3}}') == {"public.posts": 3}
    assert recorded_rows("{}") == {} and recorded_rows("not json") == {}
    with pytest.raises(DrillFailed, match="not a table"):
        recorded_rows('{"tables": {"x; DROP DATABASE live": 1}}')
    assert row_mismatches({"a": 1, "b": 2}, [1, 3]) == [("b", 3, 2)]
