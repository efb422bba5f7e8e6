"""Backups seen from the deploying machine: listing them and downloading one (python.call callbacks)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pyinfra import host, logger

from vpskit.tasks import BACKUP_NAME

BACKUP_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a file of a backup folder, no path



def names(backup_dir: str) -> list[str]:
    """Complete backups on the server, oldest first (a .partial folder is never one)."""
    ok, out = host.run_shell_command(f"ls -1 {backup_dir} 2>/dev/null || true", _sudo=True)
    return sorted(n for n in out.stdout_lines if BACKUP_NAME.match(n.strip()))


def print_list(backup_dir: str) -> None:
    found = names(backup_dir)
    if not found:
        logger.info(f"{host.print_prefix}no backups in {backup_dir}")
    for name in found:
        ok, out = host.run_shell_command(f"cat {backup_dir}/{name}/manifest.json", _sudo=True)
        try:
            m = json.loads(out.stdout)
            size = (m["db_dump_bytes"] + m["media_tar_bytes"]) / 1e6
            logger.info(f"{host.print_prefix}{name}  app {m['app_version']}  postgres {m['postgres_version']}  "
                        f"{size:.1f} MB")
        except (ValueError, KeyError):
            logger.info(f"{host.print_prefix}{name}  (no readable manifest)")


def download_latest(backup_dir: str, app_name: str, host_name: str) -> None:
    found = names(backup_dir)
    if not found:
        raise RuntimeError(f"no backup in {backup_dir} to download")
    name = found[-1]
    dest = Path("backups") / app_name / name
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o700)
    # The checksum file first: it names the files of this backup (older backups have no media.sha256).
    for f in ("manifest.json", "SHA256SUMS"):
        _get(backup_dir, name, f, dest)
    for f in [line.split()[-1] for line in (dest / "SHA256SUMS").read_text().splitlines() if line.strip()]:
        _get(backup_dir, name, f, dest)
    logger.info(f"{host.print_prefix}downloaded backup {name} to {dest}/")


def _get(backup_dir: str, name: str, filename: str, dest: Path) -> None:
    if not BACKUP_FILE.match(filename) or not host.get_file(f"{backup_dir}/{name}/{filename}", str(dest / filename),
                                                            _sudo=True):
        raise RuntimeError(f"downloading {name}/{filename} failed")
