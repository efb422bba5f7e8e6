"""release.sh's `follow`, run here with bash: what the deploying machine reports is the attempt's own status."""

import subprocess
import time
from pathlib import Path

RELEASE = Path(__file__).resolve().parents[2] / "files" / "release.sh"


def test_follow_waits_for_a_status_being_written_and_reports_it(tmp_path):
    attempts = tmp_path / "releases" / "attempts"
    attempts.mkdir(parents=True)
    (attempts / "A1.log").write_text("vpskit release: migration x failed\n")
    (attempts / "A1.status").write_text("")  # created, not written yet: the moment a reader may see it
    proc = subprocess.Popen(["bash", str(RELEASE), "follow", str(tmp_path), "A1"], stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert proc.poll() is None  # an empty status is not a result (it used to read as success)
    (attempts / "A1.status").write_text("1\n")
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert "migration x failed" in err


def test_follow_reports_success_and_the_whole_log(tmp_path):
    attempts = tmp_path / "releases" / "attempts"
    attempts.mkdir(parents=True)
    (attempts / "A2.log").write_text("one\ntwo\n")
    (attempts / "A2.status").write_text("0\n")
    done = subprocess.run(["bash", str(RELEASE), "follow", str(tmp_path), "A2"], capture_output=True, text=True,
                          timeout=10)
    assert done.returncode == 0 and done.stderr.split() == ["one", "two"]
