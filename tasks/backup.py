"""Back up the database and the media now: `pyinfra inventory.py tasks/backup.py`.

Options (`--data key=value`): download=true copies the new backup to ./backups/<app>/<name>/ here;
list=true only lists the backups on the server.
"""

from pyinfra import host
from pyinfra.operations import python, server

from vpskit import tasks
from vpskit.backups import download_latest, print_list

s = tasks.plan()
tasks.scripts(s)
if str(tasks.option("list", "false")).lower() == "true":
    python.call(name="List backups", function=print_list, backup_dir=s["backup_dir"])
else:
    server.shell(name="Back up database and media", commands=[tasks.backup_command(s)], _sudo=True)
    if str(tasks.option("download", "false")).lower() == "true":
        python.call(name="Download the backup", function=download_latest, backup_dir=s["backup_dir"],
                    app_name=s["app_name"], host_name=host.name)
