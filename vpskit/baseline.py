"""What a fresh server gets beside Docker: swap, security updates, a bounded journal, SSH without passwords.
Pure builders of the files and commands; the step that applies them is steps.server_baseline.

Each part reads the server first and changes only what differs; each is a setting in group_data/all.py.
"""

from __future__ import annotations

import re
import shlex

from vpskit.memory import SWAP_PATH

JOURNALD_CONF = "/etc/systemd/journald.conf.d/60-vpskit.conf"
AUTO_UPGRADES_CONF = "/etc/apt/apt.conf.d/20auto-upgrades"
UNATTENDED_CONF = "/etc/apt/apt.conf.d/52vpskit-unattended-upgrades"
SWAPPINESS_CONF = "/etc/sysctl.d/60-vpskit-swap.conf"
# sshd takes the first value it reads for a keyword, and reads sshd_config.d/*.conf in order before the rest:
# "10-" comes before a cloud image's 50-cloud-init.conf, which may turn password login on.
SSHD_CONF = "/etc/ssh/sshd_config.d/10-vpskit.conf"


def swap_command(size_mb: int, path: str = SWAP_PATH, fstab: str = "/etc/fstab") -> str:
    """Makes a swap file of size_mb MB at path (written aside and renamed, so a failed run leaves none), turns it
    on and lists it in /etc/fstab for the next boots. A file already there (made by an earlier run, not on) is
    turned on as it is: never recreated."""
    p = shlex.quote(path)
    return (f"set -e; if [ ! -f {p} ]; then rm -f {p}.new; "
            f"fallocate -l {size_mb}M {p}.new 2>/dev/null || dd if=/dev/zero of={p}.new bs=1M count={size_mb} "
            f"status=none; chmod 600 {p}.new; mkswap {p}.new >/dev/null; mv {p}.new {p}; fi; "
            f"swapon --show=NAME --noheadings | grep -qx {p} || swapon {p}; "
            f"grep -qs '^{path} ' {fstab} || echo '{path} none swap sw 0 0' >> {fstab}")


def swappiness_conf(value: int) -> str:
    return f"# vpskit (swappiness): swap holds what is idle, not what serves\nvm.swappiness = {value}\n"


def journald_conf(max_use: str) -> str:
    return f"# vpskit (journal_max_use): the journal's disk cap\n[Journal]\nSystemMaxUse={max_use}\n"


def auto_upgrades_conf() -> str:
    """apt's daily timers: refresh the package lists and run unattended-upgrades (the distribution's security
    origin by default)."""
    return 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'


def unattended_conf(auto_reboot: bool, reboot_time: str) -> str:
    flag = "true" if auto_reboot else "false"
    return (f"// vpskit (auto_reboot, auto_reboot_time)\nUnattended-Upgrade::Automatic-Reboot \"{flag}\";\n"
            f"Unattended-Upgrade::Automatic-Reboot-Time \"{reboot_time}\";\n")


def sshd_conf() -> str:
    return ("# vpskit (ssh_keys_only): keys only; written once a deploy had logged in with a key\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n")


def sshd_reload_command() -> str:
    """Checks the whole configuration before sshd reads it again: a broken file is taken back, never loaded."""
    conf = shlex.quote(SSHD_CONF)
    return (f"if sshd -t; then systemctl reload ssh 2>/dev/null || systemctl reload sshd; "
            f"else rm -f {conf}; echo 'sshd refused the configuration: taken back' >&2; exit 1; fi")


def login_method_command(user: str, client: str, port: str) -> str:
    """Prints how the SSH login of `user` from client:port (this very connection) was authenticated, as sshd
    logged it ("publickey", "password", ...; nothing when the log does not say): from the journal (sshd or,
    since OpenSSH 9.8, sshd-session) or /var/log/auth.log."""
    line = f"Accepted [a-z-]+ for {re.escape(user)} from {re.escape(client)} port {re.escape(port)}( |$)"
    return ("{ journalctl -q --no-pager -o cat -t sshd -t sshd-session 2>/dev/null; "
            "cat /var/log/auth.log 2>/dev/null; } | grep -E " + shlex.quote(line) +
            " | tail -1 | awk '{print $2}'")


def parse_connection(ssh_connection: str) -> tuple[str, str] | None:
    """("203.0.113.9", "51234") from SSH_CONNECTION ("client port server port"); None when not over SSH."""
    parts = ssh_connection.split()
    return (parts[0], parts[1]) if len(parts) == 4 else None
