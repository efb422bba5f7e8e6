"""The one place the server program acts on the machine: commands, time and its own output. Everything else
decides; tests give the deciding code a recorded stand-in for this (tests/unit/server_fakes.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


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
            show: bool = False, stdin: Path | None = None, env: dict | None = None,
            stderr_shown: bool = False, out: Path | None = None) -> Result:
        """`args` run; its output captured, or with `show` passed straight to this program's stderr (the log).
        `input`: text on its stdin; `stdin`: a file on its stdin; `env`: its whole environment; `stderr_shown`:
        its stderr into the log as it comes, only stdout captured; `out`: its stdout written to that file
        (streamed, never held in memory; mode 600), its stderr into the log."""
        try:
            if out is not None:
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=f, stderr=sys.stderr,
                                          timeout=timeout, check=False, env=env)
                return Result(done.returncode)
            if show:
                done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr,
                                      timeout=timeout, check=False, env=env)
                return Result(done.returncode)
            if stdin is not None:
                with open(stdin, "rb") as f:
                    done = subprocess.run(args, stdin=f, capture_output=True, timeout=timeout, check=False, env=env)
                return Result(done.returncode, done.stdout.decode(errors="replace"),
                              done.stderr.decode(errors="replace"))
            done = subprocess.run(args, input=input, stdout=subprocess.PIPE,
                                  stderr=sys.stderr if stderr_shown else subprocess.PIPE, text=True,
                                  timeout=timeout, check=False, env=env,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Result(124, "", f"{args[0]} timed out after {timeout}s")
        except OSError as err:
            return Result(127, "", str(err))
        return Result(done.returncode, done.stdout, done.stderr or "")

    def pipe(self, args: list[str], stdin: Path, consume):
        """`args` with a file on its stdin; its stdout, line by line, handed to `consume` (never held whole):
        (exit status, what consume returned)."""
        with open(stdin, "rb") as f:
            proc = subprocess.Popen(args, stdin=f, stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
                                    errors="replace")
            result = consume(proc.stdout or ())
            for _ in proc.stdout or ():  # what consume left unread
                pass
            return proc.wait(), result

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

