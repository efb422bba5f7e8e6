"""Where the app's uploads live: on the app server's disk (a Docker volume; one server), or in an S3-compatible
bucket that every app server reads and writes (media_bucket; several servers). The app gets S3_BUCKET,
S3_ENDPOINT and S3_REGION beside the keys of the operator's .env (the example app's src/lib/mediaStorage.ts
reads them); the server that takes backups gets an rclone remote in its root-only configuration, so a backup
holds the bucket's files and a restore puts them back (vpskit/server/backup.py, restore.py).

    store = MediaStore.of(settings, envfile.read())   # None: media on the app server's disk
    store.app_env()      # what the app's environment gains
    store.rclone_env()   # what the root-only /etc/vpskit/<app>/offsite.env gains
"""

from __future__ import annotations

from dataclasses import dataclass

from vpskit.settings import SettingsError

KEYS = ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")
REMOTE = "vpskitmedia"  # the rclone remote's name, defined by environment variables only (no rclone.conf)


@dataclass(frozen=True)
class MediaStore:
    bucket: str
    endpoint: str
    region: str
    access_key: str
    secret_key: str

    @classmethod
    def of(cls, s: dict, env: dict[str, str]) -> MediaStore | None:
        """From validated settings and the operator's .env; one clear error for a missing key."""
        if not s["media_bucket"]:
            return None
        access, secret = env.get(KEYS[0], ""), env.get(KEYS[1], "")
        if not (access and secret):
            raise SettingsError(f"media_bucket={s['media_bucket']} needs the bucket's keys: add {KEYS[0]} and "
                                f"{KEYS[1]} to .env")
        return cls(s["media_bucket"], s["media_endpoint"].rstrip("/"), s["media_region"], access, secret)

    def app_env(self) -> dict[str, str]:
        """The bucket's address for the app (its keys reach it from .env like any other variable)."""
        out = {"S3_BUCKET": self.bucket, "S3_REGION": self.region}
        if self.endpoint:
            out["S3_ENDPOINT"] = self.endpoint
        return out

    def rclone_env(self) -> dict[str, str]:
        """An rclone remote for backups and restores, and VPSKIT_MEDIA_REMOTE naming the bucket through it."""
        prefix = f"RCLONE_CONFIG_{REMOTE.upper()}_"
        out = {f"{prefix}TYPE": "s3", f"{prefix}PROVIDER": "Other" if self.endpoint else "AWS",
               f"{prefix}REGION": self.region, f"{prefix}ACCESS_KEY_ID": self.access_key,
               f"{prefix}SECRET_ACCESS_KEY": self.secret_key,
               # The bucket is the operator's: rclone neither checks nor creates it (keys may not allow it).
               f"{prefix}NO_CHECK_BUCKET": "true",
               "VPSKIT_MEDIA_REMOTE": f"{REMOTE}:{self.bucket}"}
        if self.endpoint:
            out[f"{prefix}ENDPOINT"] = self.endpoint
            out[f"{prefix}FORCE_PATH_STYLE"] = "true"
        return out


def several_app_servers_check(app_servers: int, s: dict) -> None:
    """Several app servers share one set of uploads: each server's own disk would hold a part of them."""
    if app_servers > 1 and not s["media_bucket"]:
        raise SettingsError(f"{app_servers} app servers need shared media: set media_bucket (an S3-compatible "
                            "bucket; keys S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY in .env), see "
                            "docs/DOCKER-DEPLOYMENT.md section 9")
