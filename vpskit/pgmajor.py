"""PostgreSQL major versions: the one `postgres_image` runs and the one the data on the server was made by. A
server of one major cannot open the data directory of another (it refuses to start, and the site stays down), so
a deploy that would change the major under existing data is refused before anything changes."""

from __future__ import annotations

import re
import shlex

from vpskit.server.database import major, major_key

VOLUME = "db-data"  # the database's volume in templates/docker-compose.yml


def volume(project: str) -> str:
    """The Docker volume Compose names for the app's database."""
    return f"{project}_{VOLUME}"


def image_major(ref: str, env_major: str = "") -> str:
    """The major an image runs: the PG_MAJOR its environment sets (the official image and its derivatives do),
    else the first version number of its tag; "" when neither says (a `latest` tag, an untagged name).

    image_major("postgres:17.2-bookworm") -> "17"; image_major("pgvector/pgvector:pg16") -> "16";
    image_major("postgres:9.6") -> "9.6"; image_major("postgres") -> ""
    """
    if env_major.strip():
        return env_major.strip()
    name = ref.split("@", 1)[0].rsplit("/", 1)[-1]
    if ":" not in name:
        return ""
    found = re.search(r"\d+(?:\.\d+)?", name.split(":", 1)[1])
    return major(found.group(0)) if found else ""


def refusal(data: str, image: str, ref: str, where: str = "the server") -> str:
    """The one line that stops a deploy whose image cannot open the data on the server, "" when it can (same
    major, no data yet, or the image's major unknown: see `unknown`)."""
    if not data or not image or major_key(data) == major_key(image):
        return ""
    if major_key(image) > major_key(data):
        return (f"postgres_image {ref} is PostgreSQL {image}, but the database on {where} holds PostgreSQL {data} "
                f"data, which {image} cannot open (the site would stay down): set postgres_image back to a "
                f"PostgreSQL {data} image, or move the data to {image} first with `pyinfra inventory.py "
                f"tasks/upgrade_postgres.py` (docs/TROUBLESHOOTING.md #55)")
    return (f"postgres_image {ref} is PostgreSQL {image}, older than the PostgreSQL {data} data on {where}, "
            f"which it cannot open: set postgres_image back to a PostgreSQL {data} image "
            "(docs/TROUBLESHOOTING.md #55)")


def unknown(data: str, ref: str) -> str:
    """The warning when the image's major cannot be told and data exists."""
    return (f"cannot tell which PostgreSQL major postgres_image {ref} runs (no PG_MAJOR, no version in its tag); "
            f"the database on the server holds PostgreSQL {data} data, which only a {data} server opens")


def state_command(project: str, ref: str) -> str:
    """Prints `data MAJOR` (the PG_VERSION of the app's database volume: PGDATA at the volume's root, or in
    MAJOR/docker below it as the official image lays it out from 18) and `image MAJOR` (PG_MAJOR of `ref` when
    the image is on the server). Needs root (the volume's folder is Docker's)."""
    vol, image = shlex.quote(volume(project)), shlex.quote(ref)
    return ("command -v docker >/dev/null || exit 0; "
            f"d=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {vol} 2>/dev/null) && "
            'for f in "$d/PG_VERSION" "$d"/*/docker/PG_VERSION; do '
            '[ -f "$f" ] && echo "data $(cat "$f")" && break; done; '
            f"docker image inspect -f '{{{{range .Config.Env}}}}{{{{println .}}}}{{{{end}}}}' {image} 2>/dev/null "
            "| sed -n 's/^PG_MAJOR=/image /p'; true")


def parse_state(lines) -> tuple[str, str]:
    """(data major, image major) from state_command's output; "" for what it did not print."""
    got = {k: v.strip() for k, _, v in (line.partition(" ") for line in lines) if k in ("data", "image")}
    return got.get("data", ""), got.get("image", "")
