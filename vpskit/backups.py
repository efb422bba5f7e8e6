"""Backups seen from the deploying machine: listing them and downloading one (python.call callbacks)."""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra import host, logger

from vpskit.tasks import BACKUP_NAME

FILES = ("manifest.json", "SHA256SUMS", "db.dump", "media.tar")


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
    for f in FILES:
        if not host.get_file(f"{backup_dir}/{name}/{f}", str(dest / f), _sudo=True):
            raise RuntimeError(f"downloading {name}/{f} failed")
    logger.info(f"{host.print_prefix}downloaded backup {name} to {dest}/")
