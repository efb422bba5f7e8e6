"""A deployed example site as a user sees it, for the backup tests: content written through its API, and
what a user would compare after a restore (post titles, each media file's checksum)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field

from tests.support import free_port, http, multipart, wait_until

CREDS = {"email": "ops@example.com", "password": "a long enough password"}


@dataclass
class Site:
    vps: object
    port: int = 3000  # the app's published port on the server's loopback
    local: int = field(default_factory=free_port)
    tunnel: object = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.local}"

    def open(self, timeout: float = 180) -> Site:
        """(Re)opens the SSH tunnel to the site and waits until it answers ready."""
        self.close()
        self.tunnel = self.vps.forward(self.port, self.local)
        wait_until(lambda: http("GET", f"{self.base}/api/health/ready", timeout=3).status == 200, timeout,
                   "the site to answer ready")
        return self

    def close(self) -> None:
        if self.tunnel is not None:
            self.tunnel.terminate()
            self.tunnel.wait(timeout=10)
            self.tunnel = None

    def register(self) -> None:
        assert http("POST", f"{self.base}/api/users/first-register", CREDS).status in (200, 201)

    def auth(self) -> dict:
        token = http("POST", f"{self.base}/api/users/login", CREDS).json()["token"]
        return {"Authorization": f"JWT {token}"}

    def add(self, titles: list[str]) -> None:
        """A post per title, and a media file beside each."""
        a = self.auth()
        for title in titles:
            assert http("POST", f"{self.base}/api/posts", {"title": title}, headers=a).status == 201
            body, ctype = multipart({"_payload": '{"alt": "x"}'},
                                    {"file": (f"{title.replace(' ', '-')}.bin", os.urandom(3000), "application/x-bin")})
            created = http("POST", f"{self.base}/api/media", body, headers={**a, "Content-Type": ctype})
            assert created.status == 201, created.body[:300]

    def delete_posts(self, n: int) -> None:
        a = self.auth()
        for doc in http("GET", f"{self.base}/api/posts?limit=100", headers=a).json()["docs"][:n]:
            assert http("DELETE", f"{self.base}/api/posts/{doc['id']}", headers=a).status == 200

    def snapshot(self) -> dict:
        a = self.auth()
        posts = sorted(d["title"] for d in http("GET", f"{self.base}/api/posts?limit=100", headers=a).json()["docs"])
        media = {}
        for doc in http("GET", f"{self.base}/api/media?limit=100", headers=a).json()["docs"]:
            media[doc["filename"]] = hashlib.sha256(http("GET", f"{self.base}{doc['url']}", headers=a).body).hexdigest()
        return {"posts": posts, "media": media}


def expected_retention(days: list[dt.date], daily=7, weekly=4, monthly=6) -> set[dt.date]:
    """The days whose backup survives (one backup a day at 03:15), by the server program's one retention rule
    (vpskit/server/backups.py, unit-tested on calendars worked out by hand)."""
    from vpskit.server.backups import gfs_keep

    names = {f"{d:%Y%m%d}T031500Z": d for d in days}
    return {names[n] for n in gfs_keep(max(names), list(names), daily, weekly, monthly)}
