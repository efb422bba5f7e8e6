"""A refusal raised while operations run is its one line, with pyinfra's exit status (issue 25 item 6: it came
after a 15-line gevent traceback)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = """
from pyinfra.api import OperationError, operation

import vpskit.operations  # noqa: F401 - what a deploy imports

# What the hub of an SSH run does once its resolver starts: its own NOT_ERROR, on the instance.
import socket  # noqa: E402

import gevent  # noqa: E402

gevent.get_hub().NOT_ERROR = (gevent.GreenletExit, SystemExit, socket.gaierror, socket.herror)


@operation()
def refuses():
    raise OperationError("port 3001 is already in use on the server by another program: free it")
    yield "true"


refuses(name="Proxy")
"""


def test_a_refusal_at_run_time_is_one_line_and_a_failure(tmp_path):
    (tmp_path / "d.py").write_text(DEPLOY)
    pyinfra = Path(sys.executable).parent / "pyinfra"
    out = subprocess.run([str(pyinfra), "-y", "@local", "d.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    text = out.stdout + out.stderr
    assert out.returncode == 1
    assert "Traceback" not in text and "failed with OperationError" not in text
    assert text.count("port 3001 is already in use") == 1
