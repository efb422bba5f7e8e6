"""Go back to an earlier release: `pyinfra inventory.py tasks/rollback.py [--data version=VERSION]`.

Default: the release that was serving before the current one (a second rollback goes further back); a release is
a version with its configuration, so a rollback after a settings change goes back to the settings before. Its
image, compose file, .env and proxy route go back together, with today's secrets (a secret rotated since is
not brought back), and the same zero-downtime switch as a deploy. `--data version=VERSION`: the newest release of
that version. `--data list=true` shows the release log and the releases kept.
"""

import re

from pyinfra import host

from vpskit import commands, tasks
from vpskit.facts import ReleaseHistory
from vpskit.operations import report
from vpskit.settings import SettingsError

s = tasks.plan()
version = str(tasks.option("version", ""))
if version and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", version):
    tasks.fail(f"version={version!r} is not a release name: list them with --data list=true")

if str(tasks.option("list", "false")).lower() == "true":
    tasks.deployed(s)  # a list only reads: nothing is uploaded
    report(name="Releases", command=commands.release_list(s["app_dir"]), failure="vpskit releases", _sudo=True)
else:
    try:
        target = host.get_fact(ReleaseHistory, app_dir=s["app_dir"], _sudo=True).rollback_target(version)
    except SettingsError as err:
        tasks.fail(str(err))
    tasks.scripts(s)
    report(name=f"Roll back to {target.describe()}",
           command=commands.release_rollback(s["app_dir"], target.number, tasks.who(), s["health_timeout"],
                                             s["keep_images"], s["drain_timeout"], s["lock_timeout"]) + " 2>&1",
           failure="vpskit rollback", _sudo=True)
