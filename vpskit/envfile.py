"""The operator's .env (secrets, never in group_data) -> the server's .env for compose."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

from dotenv import dotenv_values

from vpskit.database import ExternalDatabase
from vpskit.media import MediaStore
from vpskit.offsite import SECRET_KEYS
from vpskit.server.history import SECRETS_HEADER
from vpskit.settings import SettingsError

REQUIRED = {
    "POSTGRES_PASSWORD": "the database password",
    "PAYLOAD_SECRET": "Payload's signing secret (32+ characters)",
}
GENERATE = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
# Read by the kit itself (inventory, SSH), never shipped to the server.
KIT_PREFIX = "VPSKIT_"


# Names that hold a secret. A rollback keeps their current values (vpskit/server/history.py): a secret rotated
# because it leaked never comes back from an older release's copy. DATABASE_URI/URL carry the database password.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_KEY|_KEY$|"
                         r"^DATABASE_UR[IL]$")
# The server's .env names them in its header (templates/.env), for the server scripts and the next deploy.
OPERATOR_HEADER = "# vpskit operator keys:"
SECRET_HEADER = SECRETS_HEADER  # the server program reads it back (a rollback keeps today's secrets)
NOTIFY = "NOTIFY_URL"


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


def operator_keys(values: dict[str, str]) -> list[str]:
    """The variables of the operator's .env that reach the app's environment (server_env passes them on)."""
    return sorted(k for k in values if not k.startswith(KIT_PREFIX) and k not in SECRET_KEYS)


def secret_keys(env: dict[str, str]) -> list[str]:
    """The variables of the server's .env that hold a secret (SECRET_NAME)."""
    return sorted(k for k in env if SECRET_NAME.search(k))


def header(values: dict[str, str], env: dict[str, str]) -> str:
    """The lines the server's .env starts with after its title: which of its variables came from the operator's
    .env (a later deploy refuses to drop one silently) and which hold secrets (a rollback keeps them)."""
    return (f"{OPERATOR_HEADER} {' '.join(operator_keys(values))}\n"
            f"{SECRET_HEADER} {' '.join(secret_keys(env))}\n")


def dropped(on_server: set[str] | None, notify_on_server: bool, values: dict[str, str],
            allowed: set[str]) -> list[str]:
    """The variables the server's configuration has from an operator's .env and this machine's `values` lack
    (a run from here would remove them), minus those `allowed` to go (--data env_remove=...). `on_server` is
    None when the server's .env does not say (written by an older vpskit, or none yet): nothing is checked."""
    gone = set(on_server or ()) - set(operator_keys(values))
    if notify_on_server and not values.get(NOTIFY):
        gone.add(NOTIFY)
    return sorted(gone - allowed)


def dropped_message(gone: list[str]) -> str:
    names = ", ".join(gone)
    return (f"the server's configuration has {names}, which this machine's .env lacks: this run would remove "
            f"{'it' if len(gone) == 1 else 'them'}. Add {'it' if len(gone) == 1 else 'them'} to .env (in CI: to the "
            f"VPSKIT_ENV secret), or remove {'it' if len(gone) == 1 else 'them'} on purpose with "
            f"--data env_remove={','.join(gone)}")
