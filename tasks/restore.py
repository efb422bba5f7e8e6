"""Restore a backup: `pyinfra inventory.py tasks/restore.py [--data backup=NAME] [--data from=offsite]`.

backup: latest (default), a backup name or, from offsite, a snapshot id. from=offsite fetches it from the
backup_offsite repository first (a new server after a disaster: deploy.py, then this).
Refuses a corrupt or truncated backup and touches nothing; otherwise takes a safety backup, restores into
a scratch database, swaps it in, swaps the media in and waits until the app is ready; then says which
backup it restored and how to go back (the safety backup's name).

`--data drill=true` is the restore drill instead: the backup (offsite when configured, or from=local|offsite)
restored into a scratch database and folder, every table's rows and every media file's checksum compared with
what the backup recorded, the scratch copies removed; nothing live is touched.
"""

import re

from vpskit import tasks
from vpskit.operations import report
from vpskit.settings import SettingsError

s = tasks.plan()
if tasks.backups_are_elsewhere(s):  # several servers: on the db server (or the first app server)
    tasks.skipped(tasks.backups_are_elsewhere(s))
else:
    given = tasks.option("from")
    source = str(given or "local")
    which = str(tasks.option("backup", "latest"))
    drill = str(tasks.option("drill", "false")).lower() == "true"
    if source not in ("local", "offsite"):
        tasks.fail(f"from={source!r} is not a backup source: use from=local (default) or from=offsite")
    if source == "offsite" and not s["backup_offsite"]:
        tasks.fail("from=offsite needs backup_offsite: set it (group_data) and RESTIC_PASSWORD (.env), then deploy")
    try:
        if source == "offsite" and re.fullmatch(r"[0-9a-f]{8,64}", which):
            name = which  # a restic snapshot id
        else:
            name = tasks.backup_name(which)
    except SettingsError as err:
        tasks.fail(str(err))

    tasks.scripts(s)
    if drill:
        report(name=f"Restore drill of {name}", failure="vpskit drill", follow=True, _sudo=True,
               command=tasks.drill_command(s, name, str(given or "")) + " 2>&1")
    else:
        report(name=f"Restore backup {name}" + (" from offsite" if source == "offsite" else ""),
               failure="vpskit restore", follow=True, _sudo=True,
               command=tasks.restore_command(s, name, source) + " 2>&1")
