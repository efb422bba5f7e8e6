"""Offsite copies and alerts, seen from the deploying machine: what the server's root-only configuration
file holds (restic's repository and password, S3 keys, the SSH key for sftp, the webhook URL, the media
bucket's rclone remote), rendered here and pushed like any other file. The server program (vpskit/server/conf.py:
alerts, backups and offsite copies, restores, drills) only reads it.

    conf = Offsite.of(settings, envfile.read())
    conf.files()            # ManagedFiles for /etc/vpskit/<app>/ (mode 600, root)
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from vpskit.media import MediaStore
from vpskit.settings import SettingsError, seconds

CONF_ROOT = "/etc/vpskit"
# Variables of the operator's .env meant for the server's root-only file, never for the app's environment.
SECRET_KEYS = ("RESTIC_PASSWORD", "OFFSITE_ACCESS_KEY_ID", "OFFSITE_SECRET_ACCESS_KEY", "OFFSITE_SSH_KEY_FILE",
               "NOTIFY_URL")
_SFTP = re.compile(r"^sftp:(?://)?(?P<login>[^@/:]+@[^@/:]+)(?::(?P<port>[0-9]+))?:?(?P<path>/.*)$")


def conf_dir(app_name: str) -> str:
    return f"{CONF_ROOT}/{app_name}"


def kind(repository: str) -> str:
    """sftp, s3, local, or "" (no offsite copy)."""
    if not repository:
        return ""
    return repository.split(":", 1)[0] if repository.startswith(("sftp:", "s3:")) else "local"


def sftp_command(repository: str, key: str, known_hosts: str) -> str:
    """The ssh command restic runs for an sftp repository: the app's own key, the storage box's host key
    remembered on first use, and a bounded connect time so an unreachable box fails in seconds.

    sftp:user@host:/path and sftp://user@host:2222//path are both understood."""
    m = _SFTP.match(repository)
    if not m:
        raise SettingsError(f"backup_offsite={repository!r} is not an sftp repository restic understands: use "
                            "sftp:user@host:/path or sftp://user@host:port//path")
    return (f"ssh -i {key} -o IdentitiesOnly=yes -o UserKnownHostsFile={known_hosts} "
            f"-o StrictHostKeyChecking=accept-new -o BatchMode=yes -o ConnectTimeout=15 "
            f"-o ServerAliveInterval=15 -p {m['port'] or 22} {m['login']} -s sftp")


@dataclass(frozen=True)
class Offsite:
    app_name: str
    repository: str
    password: str
    access_key: str
    secret_key: str
    ssh_key: str  # the private key's text, for sftp
    notify_url: str
    notify_releases: bool
    keep: tuple[int, int, int]
    max_age: int  # seconds
    media: MediaStore | None = None  # uploads in a bucket, on the server that takes the backups

    @classmethod
    def of(cls, s: dict, env: dict[str, str]) -> Offsite:
        """From validated settings and the operator's .env; one clear error for what is missing."""
        repo = s["backup_offsite"]
        k = kind(repo)
        password = env.get("RESTIC_PASSWORD", "")
        if k and not password:
            raise SettingsError("backup_offsite is set but RESTIC_PASSWORD is missing from .env: add a long random "
                                "password (keep a copy off the server: without it the offsite copies cannot be read)")
        access, secret = env.get("OFFSITE_ACCESS_KEY_ID", ""), env.get("OFFSITE_SECRET_ACCESS_KEY", "")
        if k == "s3" and not (access and secret):
            raise SettingsError("backup_offsite is an S3 repository but OFFSITE_ACCESS_KEY_ID or "
                                "OFFSITE_SECRET_ACCESS_KEY is missing from .env: add the bucket's access keys")
        key = ""
        if k == "sftp":
            sftp_command(repo, "k", "h")  # the form is checked before anything else
            path = env.get("OFFSITE_SSH_KEY_FILE", "")
            if not path or not Path(path).expanduser().is_file():
                raise SettingsError(f"backup_offsite is an sftp repository but OFFSITE_SSH_KEY_FILE "
                                    f"({path or 'not set'}) in .env is not a readable private key file: set it to "
                                    "the key the server logs in to the storage box with")
            key = Path(path).expanduser().read_text()
        return cls(s["app_name"], repo, password, access, secret, key, env.get("NOTIFY_URL", ""),
                   s["notify_releases"], (s["backup_keep_daily"], s["backup_keep_weekly"], s["backup_keep_monthly"]),
                   seconds(s["offsite_max_age"]),
                   # Backups run where the database is (or, for an external one, on the first app server):
                   # the other app servers need no copy of the bucket's keys here.
                   MediaStore.of(s, env) if s.get("backup_server", s["role"] != "app") else None)

    @property
    def dir(self) -> str:
        return conf_dir(self.app_name)

    def env(self) -> dict[str, str]:
        """What the server scripts read (vpskit/server/conf.py reads it; restic gets the RESTIC_/AWS_ names)."""
        out = {"VPSKIT_APP": self.app_name}
        if self.repository:
            out |= {"RESTIC_REPOSITORY": self.repository, "RESTIC_PASSWORD": self.password,
                    "VPSKIT_KEEP": " ".join(map(str, self.keep))}
        if kind(self.repository) == "s3":
            out |= {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        if kind(self.repository) == "sftp":
            out["VPSKIT_SFTP_COMMAND"] = sftp_command(self.repository, f"{self.dir}/offsite_ssh_key",
                                                      f"{self.dir}/offsite_known_hosts")
        if self.media:
            out |= self.media.rclone_env()
        if self.notify_url:
            out["NOTIFY_URL"] = self.notify_url
            out["VPSKIT_NOTIFY_RELEASES"] = "1" if self.notify_releases else ""
        return out

    def files(self):
        """The root-only files: offsite.env and, for sftp, the private key."""
        from vpskit.operations import ManagedFile

        text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())
        files = [ManagedFile(f"{self.dir}/offsite.env", "# written by vpskit deploy.py: root only\n" + text, "600")]
        if self.ssh_key:
            files.append(ManagedFile(f"{self.dir}/offsite_ssh_key", self.ssh_key.rstrip("\n") + "\n", "600"))
        return files

    def packages(self) -> list[str]:
        """Distribution packages the server needs for this: restic, ssh for sftp, rclone for media in a bucket (the
        webhook needs none: the server program sends it)."""
        wanted = (["restic"] if self.repository else []) + (["rclone"] if self.media else [])
        return wanted + (["openssh-client"] if self.ssh_key else [])
