"""Go back to an earlier release: `pyinfra inventory.py tasks/rollback.py [--data version=VERSION]`
(default: the release before the current one): its image, compose file, .env and proxy route together, with the
same zero-downtime switch as a deploy. `--data list=true` shows the release log and the releases kept."""

import re

from vpskit import commands, tasks
from vpskit.operations import report

s = tasks.plan()
version = str(tasks.option("version", ""))
if version and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", version):
    tasks.fail(f"version={version!r} is not a release name: list them with --data list=true")

listing = str(tasks.option("list", "false")).lower() == "true"
if listing:
    tasks.deployed(s)  # a list only reads: nothing is uploaded
else:
    tasks.scripts(s)
release = f"{s['app_dir']}/bin/release.sh"
if listing:
    report(name="Releases", command=f"{release} list {s['app_dir']}", failure="vpskit releases", _sudo=True)
else:
    report(name=f"Roll back to {version or 'the previous release'}",
           command=commands.release_rollback(s["app_dir"], version, tasks.who(), s["health_timeout"], s["keep_images"],
                                             s["drain_timeout"], s["lock_timeout"]) + " 2>&1",
           failure="vpskit rollback", _sudo=True)
