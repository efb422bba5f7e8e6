"""The SSH check before a run: what a port that takes the connection says decides the one line the operator
gets (a real socket on 127.0.0.1 plays the server)."""

from __future__ import annotations

import socket
import threading

import pytest

from vpskit import preflight
from vpskit.settings import SettingsError


def answering(first_bytes: bytes):
    """A listening port that sends `first_bytes` (nothing when empty) to each connection, then waits."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if first_bytes:
                conn.sendall(first_bytes)
            threading.Timer(3, conn.close).start()

    threading.Thread(target=serve, daemon=True).start()
    return server


def check(port: int) -> str:
    with pytest.raises(SettingsError) as err:
        preflight.ssh({"ssh_hostname": "127.0.0.1", "ssh_port": port})
    return str(err.value)


def test_an_sshd_holding_back_this_address_is_named_with_what_to_do():
    """OpenSSH 9.8+ (Debian 13) answers "Not allowed at this time" to an address it penalises after failed
    logins: that is a wait, not a firewall or a wrong port."""
    with answering(b"Not allowed at this time\r\n") as server:
        message = check(server.getsockname()[1])
    assert "the SSH server refuses this address for now (Not allowed at this time" in message
    assert "wait a minute, then run again (TROUBLESHOOTING 51)" in message
    assert "firewall" not in message


def test_too_many_connections_at_once_is_the_same_wait():
    with answering(b"Exceeded MaxStartups\r\n") as server:
        assert "refuses this address for now (Exceeded MaxStartups" in check(server.getsockname()[1])


def test_another_service_on_the_port_is_named_as_such():
    with answering(b"HTTP/1.1 400 Bad Request\r\n\r\n") as server:
        message = check(server.getsockname()[1])
    assert "accepts connections but another service than SSH answered" in message
    assert "VPSKIT_SSH_PORT names the wrong port" in message


def test_a_port_that_greets_with_ssh_passes(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    with answering(b"SSH-2.0-OpenSSH_10.0p2\r\n") as server:
        preflight.ssh({"ssh_hostname": "127.0.0.1", "ssh_port": server.getsockname()[1],
                       "ssh_known_hosts_file": str(known)})
