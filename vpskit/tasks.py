"""What the day-2 task files share: settings without the deploy's app checks, the server scripts, and
options given as `--data key=value`."""

from __future__ import annotations

import re
from pathlib import Path

from pyinfra import host, logger

from vpskit import settings
from vpskit.settings import SettingsError

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("media-swap.sh", "vpskit-server")
SERVER = ROOT / "vpskit" / "server"  # the server program's package, shipped as {app_dir}/bin/vpskit_server/
# Scripts an older vpskit shipped, replaced by the server program (vpskit-server): removed where they are.
OBSOLETE = ("release.sh", "release-run.sh", "proxy.sh", "drill.sh", "restore.sh", "health-check.sh", "notify.sh",
            "backup.sh", "common.sh", "offsite.sh")
SUDO = {"_sudo": True}
BACKUP_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")


def plan() -> dict:
    keys = [d.key for d in settings.defaults()]
    s = settings.load({k: host.data.get(k) for k in keys})
    s["backup_server"] = backup_server(s)
    return paths(s)


def paths(s: dict) -> dict:
    s["app_dir"] = f"{s['app_root'].rstrip('/')}/{s['app_name']}"
    s["backup_dir"] = f"{s['backup_root'].rstrip('/')}/{s['app_name']}"
    return s


def backup_server(s: dict) -> bool:
    """Whether this host takes the backups (and drills): where the database is (one server, the db server) or,
    with an external database on several servers (database_host = "external"), the first app server."""
    if s["role"] != "app":
        return True
    if s["database_host"] != "external":
        return False
    apps = [h.name for h in host.inventory.get_group("app_servers", [])]
    return not apps or apps[0] == host.name


def backups_are_elsewhere(s: dict) -> str:
    """Why this host has no backups to take or restore ("" when it has)."""
    if backup_server(s):
        return ""
    return "the backups are on the first app server" if s["database_host"] == "external" else \
        "the backups are on the db server"


def option(name: str, default=None):
    """A task option from `--data name=value` (pyinfra puts it in host data)."""
    value = host.data.get(name)
    return default if value is None else value


def backup_name(value: str) -> str:
    if value == "latest" or BACKUP_NAME.match(value):
        return value
    raise SettingsError(f"backup={value!r} is not a backup name: use latest or a name such as 20261128T031500Z "
                        "(see `pyinfra inventory.py tasks/backup.py --data list=true`)")


def scripts(s: dict) -> None:
    """For a task that changes something: the server-side scripts in {app_dir}/bin and the root-only offsite and
    alert configuration (from this machine's .env, so a changed password or URL counts at once), uploaded only
    when they differ. A .env that lacks a variable the server's configuration has (NOTIFY_URL) is refused with
    one line, rather than silently turning alerts off; without a .env here only the scripts go."""
    from vpskit import envfile

    try:
        values = envfile.read()
    except SettingsError as err:
        if s["backup_offsite"]:
            fail(str(err))
        values = None
    try:
        conf = offsite_files(s, values) if values is not None else []
    except SettingsError as err:
        fail(str(err))
    if values is not None:
        config_kept(s, values, app_env=False)
    push(s, "Server scripts and the offsite configuration", script_files(s) + conf)


def config_kept(s: dict, values: dict, app_env: bool) -> None:
    """Ends the run (one line, exit 2, nothing changed) when it would remove a variable the server's configuration
    has from an operator's .env and this machine's .env lacks, unless --data env_remove=KEY,... allows it.
    `app_env`: the run pushes the app's .env too (a deploy), not only the root-only configuration (a task)."""
    from vpskit import envfile
    from vpskit.facts import ConfigKeys
    from vpskit.offsite import conf_dir

    state = host.get_fact(ConfigKeys, app_dir=s["app_dir"], conf_dir=conf_dir(s["app_name"]), **SUDO)
    allowed = {k.strip() for k in str(option("env_remove", "")).split(",") if k.strip()}
    gone = envfile.dropped(state["operator"] if app_env else None, state["notify"], values, allowed)
    if gone:
        fail(envfile.dropped_message(gone))


def deployed(s: dict) -> None:
    """For a task that only reads (health, lists): uploads nothing, and uses the scripts the last deploy left on
    the server. Ends the run with one line when there are none (nothing deployed there yet); says so when they
    differ from this checkout's (deploy.py brings them up to date)."""
    import hashlib

    from vpskit.facts import FileStates

    wanted = script_files(s)
    states = host.get_fact(FileStates, paths=tuple(f.path for f in wanted), **SUDO)
    missing = [f for f in wanted if states.get(f.path) is None]
    if len(missing) == len(wanted):
        fail(f"nothing deployed at {s['app_dir']} on {host.name} (no vpskit scripts there): run deploy.py first")
    if missing:
        fail(f"the vpskit scripts at {s['app_dir']} on {host.name} are an older version's (no "
             f"{missing[0].path.rsplit('/', 1)[1]}): run deploy.py to bring them up to date")
    differ = [f.path.rsplit("/", 1)[1] for f in wanted
              if states[f.path]["sha256"] != hashlib.sha256(f.content.encode()).hexdigest()]
    if differ:
        logger.warning(f"{host.print_prefix}the server's scripts differ from this checkout's ({', '.join(differ)}): "
                       "this task uses the server's; deploy.py brings them up to date")


def offsite_files(s: dict, values: dict | None = None) -> list:
    """/etc/vpskit/<app>/offsite.env (and the sftp key) from the operator's .env (`values`, else read here)."""
    from vpskit import envfile
    from vpskit.offsite import Offsite

    return Offsite.of(s, envfile.read() if values is None else values).files()


def script_files(s: dict) -> list:
    from vpskit.operations import ManagedFile

    return [*(ManagedFile(f"{s['app_dir']}/bin/{name}", (ROOT / "files" / name).read_text(), "755")
              for name in SCRIPTS),
            *(ManagedFile(f"{s['app_dir']}/bin/vpskit_server/{p.name}", p.read_text())
              for p in sorted(SERVER.glob("*.py")))]


def maintenance_page(s: dict) -> list:
    """{app_dir}/maintenance.html, what the proxy answers while the site is closed: the app's own maintenance.html
    (in app_path) or vpskit's (templates/maintenance.html); none where vpskit's proxy is not in front."""
    from vpskit.operations import ManagedFile
    from vpskit.render import render

    if s["role"] == "db" or not settings.bundled_proxy(s):
        return []
    own = ROOT / s["app_path"] / "maintenance.html"
    text = own.read_text() if own.is_file() else render("maintenance.html", **s)
    return [ManagedFile(f"{s['app_dir']}/maintenance.html", text)]


def server_program(s: dict) -> str:
    """The server program's path on the server (files/vpskit-server, vpskit/server)."""
    return f"{s['app_dir']}/bin/vpskit-server"


def push(s: dict, name: str, files: list):
    """files_in_place for this app: uploads land in its private staging folder, as the SSH user; the scripts an
    older vpskit shipped go."""
    from vpskit.operations import files_in_place

    return files_in_place(name=name, files=files, staging=staging_dir(s), user=ssh_user(),
                          remove=tuple(f"{s['app_dir']}/bin/{n}" for n in OBSOLETE), **SUDO)


def ssh_user() -> str:
    return host.data.get("ssh_user") or "root"


def staging_dir(s: dict) -> str:
    """Where uploads land before they are moved into place: private (700) and inside the app's folder, so
    the move of a secret to its final path is a rename on the same filesystem."""
    return f"{s['app_dir']}/.upload"


def backup_command(s: dict) -> str:
    """A backup now; it waits up to lock_timeout for a backup or restore already running."""
    return (f"{server_program(s)} backup --app-dir {s['app_dir']} --backups {s['backup_dir']} --keep "
            f"{s['backup_keep_daily']} {s['backup_keep_weekly']} {s['backup_keep_monthly']} "
            f"--lock-wait {s['lock_timeout']}")


def drill_command(s: dict, which: str = "latest", source: str = "") -> str:
    """The restore drill of `which` (latest or a name), from offsite when configured (or `source`)."""
    source = source or ("offsite" if s["backup_offsite"] else "local")
    return (f"{server_program(s)} drill --app-dir {s['app_dir']} --backups {s['backup_dir']} --which {which} "
            f"--source {source}")


def restore_command(s: dict, name: str, source: str) -> str:
    """A restore of backup `name` (latest, a name, or an offsite snapshot id) from `source` (local or offsite)."""
    from vpskit.commands import q

    return (f"{server_program(s)} restore --app-dir {q(s['app_dir'])} --backups {q(s['backup_dir'])} --name {q(name)} "
            f"--source {source} --lock-wait {int(s['lock_timeout'])} --health-timeout {int(s['health_timeout'])}")


def health_command(s: dict) -> str:
    """The health check: the published port where the proxy publishes it (publish_host; the loopback when that
    is 127.0.0.1 or every address; 0, not published, asks from inside the app container), the backup age limit,
    and the offsite copy's in seconds."""
    from vpskit.settings import seconds

    where = str(s["publish_port"])
    if s["publish_port"] and s["publish_host"] not in ("127.0.0.1", "0.0.0.0"):  # noqa: S104 - compared, not bound
        where = f"{s['publish_host']}:{where}"
    return (f"{server_program(s)} health --app-dir {s['app_dir']} --backups {s['backup_dir']} --port {where} "
            f"--max-backup-age 26 --max-offsite-age {seconds(s['offsite_max_age'])}")


def notified(s: dict, event: str, command: str) -> str:
    """`command` run so that its failure sends one alert to NOTIFY_URL (vpskit/server/notify.py)."""
    return f"{server_program(s)} notify --app-dir {s['app_dir']} run {event} -- {command}"


def who() -> str:
    """Who releases, for the release log and the lock holder: the CI run, or the git author and machine."""
    import os
    import socket
    import subprocess

    if os.environ.get("GITHUB_ACTIONS") == "true":
        return (f"GitHub Actions {os.environ.get('GITHUB_REPOSITORY', '?')} run {os.environ.get('GITHUB_RUN_ID', '?')}"
                f" ({os.environ.get('GITHUB_ACTOR', '?')})")
    try:
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return f"{name or os.environ.get('USER', 'someone')} on {socket.gethostname()}"


def fail(message: str) -> None:
    logger.error(f"vpskit: {message}")
    raise SystemExit(2)


def skipped(why: str) -> None:
    """Says why this host has nothing to do in the task (an app server, when the task is the db server's)."""
    logger.info(f"{host.print_prefix}nothing to do here: {why}")
