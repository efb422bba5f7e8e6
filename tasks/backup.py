"""Back up the database and the media now: `pyinfra inventory.py tasks/backup.py`.

Says the backup's name, sizes, duration and where it is (the folder here, the offsite snapshot when
backup_offsite is set; an offsite failure fails the task and keeps the local backup).
Options (`--data key=value`): download=true copies the new backup to ./backups/<app>/<name>/ here;
list=true lists the backups on the server, list=offsite the snapshots in the offsite repository.
"""

from pyinfra import host
from pyinfra.operations import python

from vpskit import tasks
from vpskit.backups import download_latest, print_list
from vpskit.operations import report

s = tasks.plan()
if tasks.backups_are_elsewhere(s):  # several servers: on the db server (or the first app server)
    tasks.skipped(tasks.backups_are_elsewhere(s))
else:
    listing = str(tasks.option("list", "false")).lower()
    if listing == "offsite" and not s["backup_offsite"]:
        tasks.fail("list=offsite needs backup_offsite: set it (group_data) and RESTIC_PASSWORD (.env), then deploy")
    if listing in ("true", "offsite"):
        tasks.deployed(s)  # a list only reads: nothing is uploaded
    else:
        tasks.scripts(s)
    if listing == "true":
        python.call(name="List backups", function=print_list, backup_dir=s["backup_dir"])
    elif listing == "offsite":
        report(name="Offsite snapshots", failure="vpskit offsite", _sudo=True,
               command=f"{tasks.server_program(s)} offsite list --app-dir {s['app_dir']} 2>&1")
    else:
        report(name="Back up database and media", command=f"{tasks.backup_command(s)} 2>&1", failure="vpskit backup",
               follow=True, _sudo=True)
        if str(tasks.option("download", "false")).lower() == "true":
            python.call(name="Download the backup", function=download_latest, backup_dir=s["backup_dir"],
                        app_name=s["app_name"], host_name=host.name)
