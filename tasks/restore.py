"""Restore a backup: `pyinfra inventory.py tasks/restore.py [--data backup=NAME]` (default: latest).

Refuses a corrupt or truncated backup and touches nothing; otherwise takes a safety backup, restores into
a scratch database, swaps it in, restores the media and waits until the app is ready.
"""

from pyinfra.operations import server

from vpskit import tasks
from vpskit.settings import SettingsError

s = tasks.plan()
try:
    name = tasks.backup_name(str(tasks.option("backup", "latest")))
except SettingsError as err:
    tasks.fail(str(err))

tasks.scripts(s)
server.shell(
    name=f"Restore backup {name}",
    commands=[f"VPSKIT_HEALTH_TIMEOUT={s['health_timeout']} {s['app_dir']}/bin/restore.sh {s['app_dir']} "
              f"{s['backup_dir']} {name}"],
    _sudo=True,
)
