"""Update the app: `pyinfra inventory.py tasks/update.py [--data app_version=...]`.

The same as deploy.py on an existing install: a backup first, the new image shipped, pending migrations
applied before the new version gets traffic (by vpskit, or by the app at boot with prodMigrations), a wait
for readiness, and the previous release put back automatically (with a non-zero exit naming the reason)
when the new one does not become ready in time.
"""

from pathlib import Path

from pyinfra import local

local.include(str(Path(__file__).resolve().parent.parent / "deploy.py"))
