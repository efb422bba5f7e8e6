"""An external database (a managed Postgres): DATABASE_URL in the operator's .env. The app connects with that
URL as given; the server's backups, restores and drills reach it through a client container whose libpq
variables (PGHOST, PGUSER, ...) come from the same URL, so the password is in no command line."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from vpskit.settings import SettingsError

KEY = "DATABASE_URL"
# libpq's sslmode values; node-postgres's own "no-verify" is libpq's "require" (encrypted, not verified).
SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full", "no-verify"}
# Names that mean "this machine" on the server: there the database vpskit runs is meant, not an external one.
LOCAL_NAMES = {"localhost", "db", "host.docker.internal"}


@dataclass(frozen=True)
class ExternalDatabase:
    host: str
    port: int
    user: str
    password: str
    name: str
    sslmode: str = ""

    @classmethod
    def of(cls, values: dict[str, str]) -> ExternalDatabase | None:
        """The external database DATABASE_URL names in the operator's .env, or None (vpskit runs postgres)."""
        return cls.parse(values[KEY]) if values.get(KEY) else None

    @classmethod
    def parse(cls, url: str) -> ExternalDatabase:
        """postgres://user:password@host[:port]/name[?sslmode=require]; one clear error for what is missing.

        ExternalDatabase.parse("postgresql://app:pw@db.example.com:25060/site?sslmode=require").where
            -> "db.example.com:25060/site"
        """
        fix = ("write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE (percent-encode special characters "
               "in the password), or remove it to have vpskit run postgres")
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise SettingsError(f"{KEY} in .env is not a postgres URL (it starts with {parts.scheme or url[:12]!r}): "
                                f"{fix}")
        try:
            port = parts.port or 5432
        except ValueError:
            raise SettingsError(f"{KEY} in .env has a port that is not a number: {fix}") from None
        host, name = parts.hostname or "", unquote(parts.path.lstrip("/"))
        missing = [what for what, value in (("host", host), ("user", parts.username), ("password", parts.password),
                                            ("database name", name)) if not value]
        if missing:
            raise SettingsError(f"{KEY} in .env has no {' and no '.join(missing)}: {fix}")
        if host in LOCAL_NAMES or _loopback(host):
            raise SettingsError(f"{KEY} in .env points at {host}, which on the server is the server itself: give "
                                "your managed Postgres's address, or remove DATABASE_URL to have vpskit run postgres "
                                "(vpskit writes the app's DATABASE_URL itself then)")
        sslmode = parse_qs(parts.query).get("sslmode", [""])[-1]
        if sslmode and sslmode not in SSLMODES:
            raise SettingsError(f"{KEY} in .env has sslmode={sslmode}, which is not one of "
                                f"{', '.join(sorted(SSLMODES))}: use e.g. sslmode=require")
        return cls(host, port, unquote(parts.username or ""), unquote(parts.password or ""), name, sslmode)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.name}"

    def client_env(self) -> dict[str, str]:
        """libpq's variables for psql, pg_dump and pg_restore on the server (PGHOST marks the database as
        external for the server scripts)."""
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGPASSWORD": self.password,
               "PGDATABASE": self.name}
        if self.sslmode:
            env["PGSSLMODE"] = "require" if self.sslmode == "no-verify" else self.sslmode
        return env


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
