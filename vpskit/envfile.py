"""The operator's .env (secrets, never in group_data) -> the server's .env for compose."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from dotenv import dotenv_values

from vpskit.database import ExternalDatabase
from vpskit.media import MediaStore
from vpskit.offsite import SECRET_KEYS
from vpskit.settings import SettingsError

REQUIRED = {
    "POSTGRES_PASSWORD": "the database password",
    "PAYLOAD_SECRET": "Payload's signing secret (32+ characters)",
}
GENERATE = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
# Read by the kit itself (inventory, SSH), never shipped to the server.
KIT_PREFIX = "VPSKIT_"


DEMO_ENV = Path(__file__).resolve().parent.parent / ".testbed" / (os.environ.get("VPSKIT_DEMO_NAME", "vpskit-demo")
                                                                + ".env")


def env_file_path() -> Path:
    """VPSKIT_ENV_FILE, else ./.env, else the demo's generated secrets when `make demo` made them."""
    if "VPSKIT_ENV_FILE" in os.environ:
        return Path(os.environ["VPSKIT_ENV_FILE"])
    if not Path(".env").exists() and DEMO_ENV.exists():
        return DEMO_ENV
    return Path(".env")


def read(path: Path | None = None) -> dict[str, str]:
    path = path or env_file_path()
    if not path.exists():
        raise SettingsError(f"{path}: no such file; copy .env.production.example to {path} and fill it in")
    values = {k: (v or "") for k, v in dotenv_values(path).items()}
    external = ExternalDatabase.of(values)  # DATABASE_URL: a managed Postgres, checked here
    for key, what in REQUIRED.items():
        if key == "POSTGRES_PASSWORD" and external:
            continue  # the password is in DATABASE_URL
        if not values.get(key):
            fix = GENERATE if key == "PAYLOAD_SECRET" else f"set {key}=... in {path}"
            raise SettingsError(f"{key} is missing from {path} ({what}): {fix}")
    if len(values["PAYLOAD_SECRET"]) < 32:
        raise SettingsError(f"PAYLOAD_SECRET in {path} is too short ({len(values['PAYLOAD_SECRET'])} characters, "
                            f"at least 32): {GENERATE}")
    for key, value in values.items():
        if "\n" in value or "\r" in value:
            raise SettingsError(f"{key} in {path} contains a line break: put the value on one line")
    return values


def server_env(values: dict[str, str], settings: dict) -> dict[str, str]:
    """What the server's .env holds: the database settings, the app's connection URL (password
    percent-encoded, so any character works) under both names Payload apps read (DATABASE_URI, as in
    Payload's docs, and DATABASE_URL, as in its templates), and every other variable of the operator's .env.
    With an external database (DATABASE_URL in .env) its URL as given, and libpq's variables for the server's
    backups instead of the database settings."""
    external = ExternalDatabase.of(values)
    if external:
        env = {"DATABASE_URI": values["DATABASE_URL"], "DATABASE_URL": values["DATABASE_URL"],
               **external.client_env()}
    else:
        password = values["POSTGRES_PASSWORD"]
        user, db = settings["postgres_user"], settings["postgres_db"]
        # The stack's own db service, or the db server's private address (several servers).
        server = settings.get("database_host") or "db"
        url = f"postgresql://{user}:{quote(password, safe='')}@{server}:5432/{db}"
        env = {"POSTGRES_USER": user, "POSTGRES_PASSWORD": password, "POSTGRES_DB": db, "DATABASE_URI": url,
               "DATABASE_URL": url}
    env["PAYLOAD_SECRET"] = values["PAYLOAD_SECRET"]
    # Payload's absolute links (media URLs, og:image, e-mails) follow the site's public address when it is
    # known; without a domain or public_url the app keeps relative links rather than guess one.
    public = settings.get("public_url") or (f"https://{settings['domain']}" if settings.get("domain") else "")
    if public:
        env["PAYLOAD_PUBLIC_SERVER_URL"] = public.rstrip("/")
    # Uploads in a bucket (media_bucket): its address; its keys follow from .env below.
    store = MediaStore.of(settings, values) if settings.get("role", "all") != "db" else None
    if store:
        env.update(store.app_env())
    for key, value in values.items():
        if key not in env or key == "PAYLOAD_PUBLIC_SERVER_URL":
            # Backup and alert secrets go to the server's root-only file (vpskit/offsite.py), not to the app.
            if not key.startswith(KIT_PREFIX) and key not in SECRET_KEYS:
                env[key] = value
    return env
