"""Show the app's logs: `pyinfra inventory.py tasks/logs.py [--data lines=200 service=app since=1h grep=ERROR
follow=true]`."""

import re
import shlex

from vpskit import commands, tasks
from vpskit.operations import report

s = tasks.plan()
lines = str(tasks.option("lines", 200))
service = str(tasks.option("service", ""))
since = str(tasks.option("since", ""))
pattern = str(tasks.option("grep", ""))
follow = str(tasks.option("follow", "false")).lower() == "true"

if not lines.isdigit():
    tasks.fail(f"lines={lines!r} is not a number: use e.g. --data lines=200")
if service not in ("", "app", "db"):
    tasks.fail(f"service={service!r} is not a service of the stack: use app or db")
if since and not re.match(r"^([0-9]+[smhd]|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:]+Z?)?)$", since):
    tasks.fail(f"since={since!r} is not a duration or date: use e.g. 30m, 2h or 2026-11-28T10:00:00Z")

args = ["logs", "--no-color", "--timestamps", "--tail", lines]
if since:
    args += ["--since", since]
if follow:
    args.append("--follow")
if service:
    args.append(service)
command = commands.compose(s["app_dir"], *args)
if pattern:
    command += f" | grep -E -- {shlex.quote(pattern)} || true"
report(name="Logs", command=command, failure="vpskit logs", follow=follow, _sudo=True)
