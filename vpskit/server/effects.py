"""The one place the server program acts on the machine: commands, time and its own output. Everything else
decides; tests give the deciding code a recorded stand-in for this (tests/unit/server_fakes.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    code: int
    out: str = ""
    err: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0


class Effects:
    """Commands run in the app's folder (the process's working directory)."""

    def run(self, *args: str, input: str | None = None, timeout: float | None = None,  # noqa: A002
            show: bool = False) -> Result:
        """`args` run; its output captured, or with `show` passed straight to this program's stderr (the log)."""
        try:
            if show:
                done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr,
                                      timeout=timeout, check=False)
                return Result(done.returncode)
            done = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout, check=False,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Result(124, "", f"{args[0]} timed out after {timeout}s")
        except OSError as err:
            return Result(127, "", str(err))
        return Result(done.returncode, done.stdout, done.stderr)

    def stream(self, *args: str) -> tuple[int, str]:
        """`args` run with stdout and stderr merged: each line said as it comes, and all of it returned."""
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace")
        except OSError as err:
            return 127, str(err)
        lines = []
        for line in proc.stdout or ():
            lines.append(line)
            self.say(line.rstrip("\n"))
        return proc.wait(), "".join(lines)

    def say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def clock(self) -> float:
        return time.monotonic()

