"""Stop the app: `pyinfra inventory.py tasks/stop.py`.

Containers stop gracefully within their grace periods; volumes (database, media) are always kept.
`--data remove=true` also removes the containers and network (still keeping the volumes);
only `--data purge=<app name>` removes the volumes too, after a final backup would be your job.
The task fails (non-zero) when compose does: its output is shown.
"""

from vpskit import commands, tasks
from vpskit.operations import report

s = tasks.plan()
purge = str(tasks.option("purge", ""))
remove = str(tasks.option("remove", "false")).lower() == "true"

if purge and purge != s["app_name"]:
    tasks.fail(f"purge={purge!r} does not name this app: to delete its volumes for good, use "
               f"--data purge={s['app_name']}")
if purge:
    action, args, done = ("Remove containers and VOLUMES (data deleted)", ("down", "--volumes", "--remove-orphans"),
                          "containers, network and data volumes removed (the backups in backup_root are kept)")
elif remove:
    action, args, done = ("Remove containers (volumes kept)", ("down", "--remove-orphans"),
                          "containers and network removed, data volumes kept")
else:
    action, args, done = "Stop containers (volumes kept)", ("stop",), "containers stopped, data volumes kept"

report(name=action, command=commands.stop(s["app_dir"], s["app_name"], s["lock_timeout"], args, done),
       failure="vpskit stop", _sudo=True)
