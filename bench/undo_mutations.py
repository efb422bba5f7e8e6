"""Each undo of the server program's transactions removed in turn (release and restore): the unit tests must
fail every time. Prints one line per removed undo, caught or MISSED, and a count; changes no file for good.

    .venv/bin/python bench/undo_mutations.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "vpskit" / "server"
TESTS = ["tests/unit/test_server_release.py", "tests/unit/test_server_restore.py"]

# (file, text, replacement, what it removes)
MUTATIONS = [
    ("release.py", "        self.d.remove(self.new)\n        self.put_back()\n", "        self.d.remove(self.new)\n",
     "release, before the switch: the previous files back"),
    ("release.py", "        self.d.tail(self.new, 25)\n        self.d.remove(self.new)\n",
     "        self.d.tail(self.new, 25)\n", "release, before the switch: the new container removed"),
    ("proxy.py", "            if before is None:\n                site.unlink(missing_ok=True)\n            else:\n"
     "                site.write_text(before)\n", "", "release, at the switch: the previous route back"),
    ("release.py", "        if missing:\n            self.put_back()\n", "        if missing:\n",
     "release, a runner that records nothing: the previous files back"),
    ("release.py", "        if status or which:\n            self.put_back()\n", "        if status or which:\n",
     "release, a failed migration: the previous files back"),
    ("release.py", "        self.put_back()\n        v, prev = self.p.version", "        v, prev = self.p.version",
     "release, a database that cannot start: the previous files back"),
    ("release.py", '            if self.d.up("--no-deps", "db") and self.wait_db():', "            if self.wait_db():",
     "release, a database that cannot start: the previous database started again"),
    ("locks.py", "                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n", "                pass\n",
     "release and restore: the app's lock"),
    ("release.py", "                return self.ended_without_status(attempt)", "                return 1",
     "release, its process killed: recorded as failed"),
    ("restore.py", "        if not self.stopped:\n            raise RestoreFailed(why)\n",
     "        raise RestoreFailed(why)\n", "restore, a failure after the stop: the app started again"),
    ("restore.py", "        if not self.swap_db(live, old, scratch):", "        if False:",
     "restore, a failed media swap: the database from before swapped back"),
    ("restore.py", "        if self.unpacked:\n            self.media(\"undo\")\n", "",
     "restore, any failure: the unpacked media taken back"),
    ("restore.py", "        if self.scratch_left:\n", "        if False:\n",
     "restore, any failure: the scratch database dropped"),
]


def main() -> int:
    missed = 0
    for name, text, replacement, what in MUTATIONS:
        path = SERVER / name
        original = path.read_text()
        if text not in original:
            print(f"STALE  {what}: its text is no longer in {name}")
            missed += 1
            continue
        path.write_text(original.replace(text, replacement, 1))
        try:
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
        finally:
            path.write_text(original)
        caught = run.returncode != 0
        missed += not caught
        print(f"{'caught' if caught else 'MISSED'} {what}")
    print(f"{len(MUTATIONS) - missed} of {len(MUTATIONS)} removed undos caught by the unit tests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
