"""Stop the app: `pyinfra inventory.py tasks/stop.py`.

Containers stop gracefully within their grace periods; volumes (database, media) are always kept.
`--data remove=true` also removes the containers and network (still keeping the volumes);
only `--data purge=<app name>` removes the volumes too, after a final backup would be your job.
"""

from pyinfra.operations import server

from vpskit import commands, tasks

s = tasks.plan()
purge = str(tasks.option("purge", ""))
remove = str(tasks.option("remove", "false")).lower() == "true"

if purge and purge != s["app_name"]:
    tasks.fail(f"purge={purge!r} does not name this app: to delete its volumes for good, use "
               f"--data purge={s['app_name']}")
if purge:
    action, args = "Remove containers and VOLUMES (data deleted)", ("down", "--volumes", "--remove-orphans")
elif remove:
    action, args = "Remove containers (volumes kept)", ("down", "--remove-orphans")
else:
    action, args = "Stop containers (volumes kept)", ("stop",)

server.shell(name=action, commands=[f"if [ -d {s['app_dir']} ]; then {commands.compose(s['app_dir'], *args)}; fi"],
             _sudo=True)
