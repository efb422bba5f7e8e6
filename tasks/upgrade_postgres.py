"""Move the database to a new PostgreSQL major: `pyinfra inventory.py tasks/upgrade_postgres.py`
(to postgres_image's major; `--data to=postgres:18` names another image).

A verified backup first; the site closed (the proxy's maintenance page, /api/health still answering) and the app
stopped; the database dumped, restored into a new server of the new major in a volume of its own and every table's
rows compared; only then the switch, the app started and the site opened. Any failure before the switch leaves the
old database serving, untouched. The old data is kept as the volume <app>_db-data-<old major>:
`--data rollback=true` returns to it (what was written since is not in it), `--data drop_old=true` removes it.
Says the sizes, the rows, how long the site was closed and how to go back.

Several servers: the db server upgrades; the app servers show the maintenance page meanwhile (a site the operator
closed stays closed). A managed database (DATABASE_URL) is refused: its provider upgrades it.
"""

from vpskit import settings, shipping, tasks
from vpskit.operations import image_present, report
from vpskit.server.pgupgrade import ELSEWHERE, MANAGED

s = tasks.plan()
rollback, drop_old = (str(tasks.option(k, "false")).lower() == "true" for k in ("rollback", "drop_old"))
image = str(tasks.option("to", s["postgres_image"]))
try:
    settings.CHECKS["postgres_image"]("to", image)
except settings.SettingsError as err:
    tasks.fail(str(err))
if rollback and drop_old:
    tasks.fail("rollback=true and drop_old=true exclude each other: say one")
if s["database_host"] == "external":  # a single server's DATABASE_URL is refused by the server program
    tasks.fail(MANAGED)
command, what = "upgrade", f"Upgrade PostgreSQL to {image}"
if rollback:
    command, what = "rollback", "Go back to the PostgreSQL data the upgrade kept"
elif drop_old:
    command, what = "drop-old", "Remove the PostgreSQL data the upgrade kept"
# Several servers: the app servers show the maintenance page while the db server switches (not for drop_old).
closes = s["role"] == "app" and not drop_old and settings.bundled_proxy(s)
during = f"--during '{ELSEWHERE}' --app-dir {s['app_dir']} 2>&1"
if s["role"] == "app" and not closes:
    tasks.skipped("the database is on the db server")
if s["role"] != "app":
    tasks.scripts(s)
    tasks.push(s, "Maintenance page", tasks.maintenance_page(s))  # what the site shows while it is closed
    if command == "upgrade":
        image_present(name=f"Image {image} on the server", ref=image, transport=s["image_transport"],
                      shipping=shipping.Shipping.of(s), _sudo=True)
if closes:  # once the db server has the new image: the app servers' window starts here
    tasks.scripts(s)
    tasks.push(s, "Maintenance page", tasks.maintenance_page(s))
    report(name="Close the site while the db server upgrades", failure="vpskit maintenance", _sudo=True,
           command=f"{tasks.server_program(s)} proxy maintenance on {during}")
if s["role"] != "app":
    report(name=what, failure="vpskit upgrade", follow=True, _sudo=True,
           command=f"{tasks.server_program(s)} pg {command} --app-dir {s['app_dir']} --backups {s['backup_dir']} "
                   f"--to {image} --lock-wait {s['lock_timeout']} --health-timeout {s['health_timeout']} 2>&1")
if closes:  # after the db server's step, whether it succeeded or not (pyinfra goes on for the other hosts)
    report(name="Open the site again", failure="vpskit maintenance", _sudo=True,
           command=f"{tasks.server_program(s)} proxy maintenance off {during}")
