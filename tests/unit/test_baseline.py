"""The server baseline's commands (vpskit/baseline.py), run here with sh against stand-in system commands: a swap
file is made once and never recreated, sshd's configuration is taken back when sshd refuses it, and key login
is read from sshd's own log for this very connection only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vpskit import baseline

# Stand-ins that log their calls; swapon lists what was turned on (kept in a file, as the kernel would).
STUBS = {
    "fallocate": 'echo "fallocate $*" >> "$CALLS"; : > "$3"',
    "mkswap": 'echo "mkswap $*" >> "$CALLS"',
    "swapon": 'if [ "$1" = --show=NAME ]; then cat "$ON" 2>/dev/null; else echo "swapon $*" >> "$CALLS"; '
              'echo "$1" >> "$ON"; fi',
    "sshd": 'echo "sshd $*" >> "$CALLS"; exit "${SSHD_EXIT:-0}"',
    "systemctl": 'echo "systemctl $*" >> "$CALLS"',
    "journalctl": 'cat "$JOURNAL"',
}


@pytest.fixture
def box(tmp_path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "ON": str(tmp_path / "on"),
            "JOURNAL": str(tmp_path / "journal")}


def sh(line: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env, timeout=30)


def calls(box) -> list[str]:
    path = Path(box["CALLS"])
    return path.read_text().splitlines() if path.exists() else []


def test_a_swap_file_is_made_once_and_on_at_boot(tmp_path, box):
    swapfile, fstab = tmp_path / "swapfile", tmp_path / "fstab"
    fstab.write_text("UUID=abc / ext4 defaults 0 1\n")
    line = baseline.swap_command(1024, str(swapfile), str(fstab))
    out = sh(line, box)
    assert out.returncode == 0, out.stderr
    assert calls(box) == [f"fallocate -l 1024M {swapfile}.new", f"mkswap {swapfile}.new", f"swapon {swapfile}"]
    assert swapfile.exists() and oct(swapfile.stat().st_mode & 0o777) == "0o600"
    assert fstab.read_text().splitlines()[-1] == f"{swapfile} none swap sw 0 0"
    # Again (the fact saw no swap, e.g. turned off by hand): the file is turned on as it is, never recreated.
    Path(box["ON"]).unlink()
    Path(box["CALLS"]).unlink()
    assert sh(line, box).returncode == 0
    assert calls(box) == [f"swapon {swapfile}"]
    assert fstab.read_text().count("swap sw") == 1


def test_sshd_configuration_it_refuses_is_taken_back_not_loaded(tmp_path, box, monkeypatch):
    conf = tmp_path / "10-vpskit.conf"
    conf.write_text(baseline.sshd_conf())
    monkeypatch.setattr(baseline, "SSHD_CONF", str(conf))
    out = sh(baseline.sshd_reload_command(), {**box, "SSHD_EXIT": "255"})
    assert out.returncode == 1 and "sshd refused the configuration: taken back" in out.stderr
    assert not conf.exists() and calls(box) == ["sshd -t"]
    conf.write_text(baseline.sshd_conf())
    Path(box["CALLS"]).unlink()
    assert sh(baseline.sshd_reload_command(), box).returncode == 0
    assert calls(box) == ["sshd -t", "systemctl reload ssh"] and conf.exists()


JOURNAL = """\
Accepted password for deploy from 203.0.113.9 port 5123 ssh2
Accepted publickey for deploy from 203.0.113.9 port 51234 ssh2: ED25519 SHA256:abc
Accepted password for deploy from 203.0.113.99 port 51234 ssh2
"""


@pytest.mark.parametrize(("client", "port", "method"), [
    ("203.0.113.9", "51234", "publickey"),
    ("203.0.113.9", "5123", "password"),  # not port 51234's line
    ("203.0.113.99", "51234", "password"),
    ("203.0.113.9", "60000", ""),  # nothing logged for this connection: not proven
])
def test_the_login_method_is_the_one_sshd_logged_for_this_connection(box, client, port, method):
    Path(box["JOURNAL"]).write_text(JOURNAL)
    out = sh(baseline.login_method_command("deploy", client, port), box)
    assert out.stdout.strip() == method


def test_ssh_connection_is_read_as_client_and_port():
    assert baseline.parse_connection("203.0.113.9 51234 10.0.0.5 22") == ("203.0.113.9", "51234")
    assert baseline.parse_connection("") is None


def test_unattended_upgrades_never_reboot_unless_asked():
    assert 'Automatic-Reboot "false"' in baseline.unattended_conf(False, "04:30")
    assert 'Automatic-Reboot "true"' in baseline.unattended_conf(True, "03:00")
    assert 'Automatic-Reboot-Time "03:00"' in baseline.unattended_conf(True, "03:00")
