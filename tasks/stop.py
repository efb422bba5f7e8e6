"""Stop the app: `pyinfra inventory.py tasks/stop.py`.

Containers stop gracefully within their grace periods; volumes (database, media) are always kept.
`--data remove=true` also removes the containers and network (still keeping the volumes);
only `--data purge=<app name>` removes the volumes too, after a final backup would be your job.
"""

from pyinfra.operations import server

from vpskit import tasks

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

# Under the app's lock (files/common.sh take_lock): never in the middle of a release, restore or rollback.
busy = (f"vpskit: another operation on {s['app_name']} still holds its lock after {s['lock_timeout']}s "
        f"($(cat {s['app_dir']}/.vpskit.lock.holder 2>/dev/null)): nothing was stopped; run this again when it "
        "has finished")
locked = (f"cd {s['app_dir']} && {{ flock -w {s['lock_timeout']} 8 || {{ echo \"{busy}\" >&2; exit 1; }}; "
          f"docker compose {' '.join(args)}; }} 8>>.vpskit.lock")
server.shell(name=action, commands=[f"if [ -d {s['app_dir']} ]; then {locked}; fi"], _sudo=True)
