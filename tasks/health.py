"""Check the deployed app from outside: `pyinfra inventory.py tasks/health.py`.

Prints one line per check (containers, /api/health, /api/health/ready, disk, memory, last backup's age and, with
backup_offsite, the last offsite copy's)
and fails naming what is unhealthy. The server program runs the checks (vpskit-server health,
vpskit/server/healthcheck.py); the health timer runs the same.
"""

from vpskit import tasks
from vpskit.operations import report

s = tasks.plan()
tasks.deployed(s)  # reads only: uploads nothing, uses the scripts the last deploy left there
report(
    name="Health",
    command=tasks.health_command(s),
    failure="vpskit health",
    _sudo=True,
)
