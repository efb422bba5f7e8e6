"""Stop the app: `pyinfra inventory.py tasks/stop.py`.

Containers stop gracefully within their grace periods; volumes (database, media) are always kept.
`--data remove=true` also removes the containers and network (still keeping the volumes);
only `--data purge=<app name>` removes the volumes too, after a final backup would be your job.
"""

from vpskit import tasks
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

# Under the app's lock (files/common.sh take_lock): never in the middle of a release, restore or rollback.
busy = (f"vpskit: another operation on {s['app_name']} still holds its lock after {s['lock_timeout']}s "
        f"($(cat {s['app_dir']}/.vpskit.lock.holder 2>/dev/null)): nothing was stopped; run this again when it "
        "has finished")
# What was serving, read before it stops, so the output says from what to what.
serving = "$(docker inspect -f '{{.Config.Image}}' $(docker compose ps -q app | head -1) 2>/dev/null)"
locked = (f"cd {s['app_dir']} && {{ flock -w {s['lock_timeout']} 8 || {{ echo \"{busy}\" >&2; exit 1; }}; "
          f"was={serving}; docker compose {' '.join(args)} 2>&1 | grep -v -e ' Stopping$' -e ' Removing$'; "
          f"echo \"vpskit stop: {s['app_name']} was serving ${{was:-nothing}}; now {done}; start it again with: "
          f"pyinfra inventory.py deploy.py\"; }} 8>>.vpskit.lock")
report(name=action, command=f"if [ -d {s['app_dir']} ]; then {locked}; else echo 'vpskit stop: nothing deployed at "
       f"{s['app_dir']}'; fi", failure="vpskit stop", _sudo=True)
