"""The two locks a restore and an upgrade hold (vpskit/server/locks.py): both or neither, released at the end."""

from __future__ import annotations

from tests.unit.server_fakes import FakeEffects, World
from vpskit.server.locks import Lock, app_and_backups


def test_both_locks_are_held_inside_and_free_after(tmp_path):
    app, root, fx = tmp_path / "app", tmp_path / "backups", FakeEffects(World())
    app.mkdir()
    with app_and_backups(app, root, fx, 5, "restore of X") as refusal:
        assert refusal == ""
        assert (root.stat().st_mode & 0o777) == 0o700
        assert Lock(root / ".lock", fx).take(0, "a backup") != ""  # held
        assert (app / ".vpskit.lock.holder").read_text().startswith("restore of X, since ")
    for path in (app / ".vpskit.lock", root / ".lock"):
        other = Lock(path, fx)
        assert other.take(0, "next") == ""
        other.release()


def test_a_running_backup_refuses_it_in_one_line_and_frees_the_apps_lock(tmp_path):
    app, root, fx = tmp_path / "app", tmp_path / "backups", FakeEffects(World())
    app.mkdir()
    root.mkdir()
    backup = Lock(root / ".lock", fx)
    assert backup.take(0, "backup") == ""
    with app_and_backups(app, root, fx, 3, "upgrade") as refusal:
        assert refusal == (f"another backup or restore is running (lock {root}/.lock): try again when it ends "
                           "(waited 3s)")
    app_lock = Lock(app / ".vpskit.lock", fx)
    assert app_lock.take(0, "next") == ""
    app_lock.release()
    backup.release()
