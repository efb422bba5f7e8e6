"""Close the site for maintenance, or open it again: `pyinfra inventory.py tasks/maintenance.py --data on=true`
(or `--data off=true`).

While closed, the server's proxy answers every request of this app with 503, `Retry-After` and the maintenance
page (the app's own `maintenance.html` in app_path, else vpskit's), except /api/health and /api/health/ready, which
still reach the app: a monitor tells maintenance from down. Other apps on the server are untouched; a release
in between keeps the site closed. With your own proxy (proxy_network), close the site there.
"""

from vpskit import settings, tasks
from vpskit.operations import report

s = tasks.plan()
on, off = (str(tasks.option(k, "false")).lower() == "true" for k in ("on", "off"))
if on == off:
    tasks.fail("say what to do: --data on=true closes the site for maintenance, --data off=true opens it again")
if s["role"] == "db":
    tasks.skipped("the db server serves no site")
elif not settings.bundled_proxy(s):
    tasks.fail(f"{s['app_name']} is behind your own proxy (proxy_network), not vpskit's: close it there (503 with "
               "Retry-After for every path but /api/health)")
else:
    tasks.scripts(s)
    if on:
        tasks.push(s, "Maintenance page", tasks.maintenance_page(s))
    report(name="Close the site" if on else "Open the site", failure="vpskit maintenance", _sudo=True,
           command=f"{tasks.server_program(s)} proxy maintenance {'on' if on else 'off'} --app-dir {s['app_dir']} 2>&1")
