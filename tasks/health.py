"""Check the deployed app from outside: `pyinfra inventory.py tasks/health.py`.

Prints one line per check (containers, /api/health, /api/health/ready, disk, memory, last backup's age)
and fails naming what is unhealthy. files/health-check.sh runs the same checks on the server.
"""

from vpskit import tasks
from vpskit.operations import report

s = tasks.plan()
tasks.scripts(s)
report(
    name="Health",
    # The published port on the server's loopback; 0 (not published) asks from inside the app container.
    command=f"{s['app_dir']}/bin/health-check.sh {s['app_dir']} {s['backup_dir']} {s['publish_port']}",
    failure="vpskit health",
    _sudo=True,
)
