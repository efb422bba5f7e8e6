"""A backup (vpskit/server/backup.py) against a recorded Docker world writing real files: a complete backup is
one renamed folder whose checksums, media sums and manifest agree; a step that fails keeps nothing; retention
follows the one rule; and the parsing it relies on (pg_restore's COPY blocks, the tar's files)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from tests.unit.server_fakes import Container, FakeEffects, World
from vpskit.server.backup import Backup, copy_rows, human_size, media_sums, room_needed_mb
from vpskit.server.drill import bad_checksums
from vpskit.server.effects import Result

COPY = 'COPY public.posts (id, title) FROM stdin;\n1\ta\n2\tb\n\\.\nCOPY public."Users" (id) FROM stdin;\n1\n\\.\n'


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class BackupWorld(FakeEffects):
    def __init__(self, w: World, fail: str = ""):
        super().__init__(w)
        self.fail = fail

    def run(self, *args, out: Path | None = None, **kw):
        line = " ".join(args)
        if self.fail and self.fail in line:
            self.w.calls.append(args)
            return Result(1, "", "simulated\n")
        if out is not None:
            self.w.calls.append(args)
            out.write_bytes(b"PGDMP dump" if "pg_dump" in line else tar_bytes({"a.png": b"a", "b/c.png": b"cc"}))
            return Result(0)
        if "pg_restore --data-only" in line:
            return Result(0, COPY)
        if "show server_version" in line:
            return Result(0, "17.6 (Debian 17.6-1)\n")
        if "config --images" in line:
            return Result(0, "postgres:17\n")
        if "{{.Config.Image}}" in line:
            return Result(0, "example:v7\n")
        return super().run(*args, **kw)


def backup(tmp_path: Path, now: str, fail: str = "", keep=(7, 4, 6)) -> tuple[int, BackupWorld, Path]:
    app, root = tmp_path / "example", tmp_path / "backups"
    app.mkdir(exist_ok=True)
    (app / ".env").write_text('POSTGRES_USER="payload"\n')
    (app / "docker-compose.yml").write_text("name: example\nservices: {}\n")
    fx = BackupWorld(World(containers=[Container("c1", "example-app-1", "app"), Container("c2", "example-db-1", "db")]),
                     fail)
    code = Backup(app, root, keep, 5, fx, tmp_path / "bin", now=now).run()
    return code, fx, root


def test_a_backup_is_one_complete_folder_whose_sums_and_manifest_agree(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VPSKIT_OFFSITE_CONF", str(tmp_path / "none"))
    code, fx, root = backup(tmp_path, "20261206T031500Z")
    assert code == 0 and capsys.readouterr().out == "20261206T031500Z\n"
    b = root / "20261206T031500Z"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["20261206T031500Z"]
    assert bad_checksums(b, b / "SHA256SUMS") == []
    assert (b / "media.sha256").read_text() == (f"{hashlib.sha256(b'a').hexdigest()}  ./a.png\n"
                                                f"{hashlib.sha256(b'cc').hexdigest()}  ./b/c.png\n")
    m = json.loads((b / "manifest.json").read_text())
    assert m["tables"] == {"public.posts": 2, 'public."Users"': 1} and m["media_files"] == 2
    assert (m["app_version"], m["postgres_version"], m["db_dump_bytes"]) == ("v7", "17.6", 10)
    assert fx.w.said[-1].startswith("vpskit backup: backup 20261206T031500Z complete in 0s: database 1 kB, media ")


def test_a_failed_step_keeps_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VPSKIT_OFFSITE_CONF", str(tmp_path / "none"))
    code, fx, root = backup(tmp_path, "20261206T031500Z", fail="docker run")
    assert code == 1 and capsys.readouterr().out == ""
    assert fx.w.said[-1] == "vpskit backup: writing the media archive failed (above): nothing kept"
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []  # no partial folder left


def test_retention_prunes_by_the_one_rule_and_a_safety_copy_is_never_pruned(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VPSKIT_OFFSITE_CONF", str(tmp_path / "none"))
    for day in range(1, 6):
        assert backup(tmp_path, f"202612{day:02d}T031500Z", keep=(2, 0, 0))[0] == 0
    root = tmp_path / "backups"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "20261204T031500Z", "20261205T031500Z"]
    assert backup(tmp_path, "20261205T120000Z", keep=None)[0] == 0  # a restore's safety copy: no retention
    assert len([p for p in root.iterdir() if not p.name.startswith(".")]) == 3


def test_what_the_backup_reads():
    assert copy_rows(COPY.splitlines(keepends=True)) == {"public.posts": 2, 'public."Users"': 1}
    assert copy_rows(["COPY t (a) FROM stdin;\n", "\\.\n"]) == {"t": 0}
    assert room_needed_mb('{"db_dump_bytes": 1048576, "media_tar_bytes": 1048576}') == 3
    assert room_needed_mb("{}") == 1 and room_needed_mb("nonsense") == 0
    assert human_size(1000) == "1 kB" and human_size(3 * 1048576 + 500000) == "3.5 MB"


def test_media_sums_name_each_file_as_the_archive_does(tmp_path):
    (tmp_path / "m.tar").write_bytes(tar_bytes({"x.png": b"x"}))
    assert media_sums(tmp_path / "m.tar") == f"{hashlib.sha256(b'x').hexdigest()}  ./x.png\n"


def test_a_backup_that_begins_in_the_second_another_one_was_named_is_named_a_second_later(tmp_path, monkeypatch,
                                                                                            capsys):
    """Two deploys at once, each with its pre-update backup: the second waits for the first's lock and may begin
    in the same second. It is named when it begins (under the lock), and a second later than an existing one."""
    monkeypatch.setenv("VPSKIT_OFFSITE_CONF", str(tmp_path / "none"))
    app, root = tmp_path / "example", tmp_path / "backups"
    app.mkdir()
    (app / ".env").write_text('POSTGRES_USER="payload"\n')
    (app / "docker-compose.yml").write_text("name: example\nservices: {}\n")
    (root / "20261206T031500Z").mkdir(parents=True)  # the other deploy's backup, just complete
    fx = BackupWorld(World(containers=[Container("c1", "example-app-1", "app"), Container("c2", "example-db-1", "db")]),
                     "")
    stamp = lambda: f"20261206T0315{int(fx.w.time):02d}Z"  # noqa: E731 - the clock of the recorded world
    code = Backup(app, root, (7, 4, 6), 5, fx, tmp_path / "bin", stamp=stamp).run()
    assert code == 0, fx.w.said
    assert capsys.readouterr().out == "20261206T031501Z\n"
    assert (root / "20261206T031501Z" / "manifest.json").exists()
