"""vpskit-server: the server program's command line (run as root by deploy.py and the tasks, over SSH).

    vpskit-server release start --app-dir D --attempt ID --version V --hash H --who W [--timeout S] [--keep N]
                                [--drain S] [--lock-wait S] [--migrate A,B]
        release the files the deploy pushed to D/next (H: their sha256, so a push by another deploy in between is
        seen); with --migrate, run the one-shot migrate service first and check that each is recorded afterwards
    vpskit-server release rollback --app-dir D --to N --who W [--timeout ...]
        release kept release N again, with today's secrets (tasks/rollback.py chooses N)
    vpskit-server release follow --app-dir D --attempt ID [--seconds S]
        print a release's log as it grows; exit with its status
    vpskit-server release list --app-dir D     the release log, then the releases kept for rollback
    vpskit-server release run --app-dir D --attempt ID   (internal) the release itself, in a systemd unit
    vpskit-server stack states --app-dir D
        one line per service: SERVICE STATUS/HEALTH ok|no; exit 0 only when the stack is healthy
    vpskit-server stack hash --app-dir D
        the hash of the files in place (history.dir_hash: what the deploy compares with the last release's)
    vpskit-server stack wait --app-dir D --seconds S --label L
        until the stack is healthy (progress every 10 s); ends early when a container exits, crashes or cannot
        reach its database (its last log lines shown)
    vpskit-server db sh --app-dir D SCRIPT [ARGS...]
        SCRIPT run by sh where PGUSER and PGDATABASE name the app's database (its db service, or the client
        container of an external one); stdin and stdout pass through; its exit status
    vpskit-server db where|external|image --app-dir D
        where the database is (for messages); exit 0 when it is external; the image with its client tools
    vpskit-server db migrations --app-dir D
        the Payload migrations recorded in the app's database, one per line (nothing without a database yet)
    vpskit-server drill --app-dir D --backups ROOT [--which latest|NAME] [--source local|offsite]
        the restore drill: a backup restored into scratch copies and checked against its manifest and checksums
    vpskit-server restore --app-dir D --backups ROOT --name latest|NAME|SNAPSHOT [--source local|offsite]
                          [--lock-wait S] [--health-timeout S]
        a backup restored: verified, a safety backup first, swapped in with the app stopped only for the swap
    vpskit-server health --app-dir D --backups ROOT --port [ADDRESS:]PORT [--max-backup-age H]
                         [--max-offsite-age S]
        the health check: one line per check (ok, warn, FAIL), then healthy or unhealthy (exit 1)
    vpskit-server notify --app-dir D run EVENT -- COMMAND...
        COMMAND run (its output kept for the journal); when it fails, one message to NOTIFY_URL; its exit status
    vpskit-server notify --app-dir D release OK|FAILED TEXT     one message per release when notify_releases is set
    vpskit-server backup --app-dir D --backups ROOT [--keep DAILY WEEKLY MONTHLY | --keep none] [--lock-wait S]
        a verified backup (its name on stdout), retention, and the copy offsite when backup_offsite is set;
        --keep none: a restore's safety copy (neither pruned nor copied offsite). VPSKIT_BACKUP_TIME names it
        (tests), VPSKIT_OFFSITE_SOFT=1 makes a failed offsite copy a warning (a deploy's pre-update backup)
    vpskit-server offsite list --app-dir D      the app's snapshots in its offsite repository (restic)
    vpskit-server pg upgrade|rollback|drop-old --app-dir D --backups ROOT [--to IMAGE] [--lock-wait S]
                     [--health-timeout S]
        a PostgreSQL major upgrade of the app's database to IMAGE (the old data kept aside), the return to that
        data, or its removal (vpskit/server/pgupgrade.py)
    vpskit-server proxy maintenance on|off --app-dir D [--during WHAT]
        the app closed (its proxy answers 503, Retry-After and D/maintenance.html, /api/health excepted) or open;
        --during: for an operation on another server, opened again only if this closed it
    vpskit-server jobs run --app-dir D [--interval S]
        the app's jobs worker (the systemd service vpskit-jobs-<app>): every S seconds, one request to the app
        container serving in D to run Payload's due jobs and schedules (vpskit/server/jobs.py)
    vpskit-server backups size BYTES      a size as the messages say it ("12 kB", "3.4 MB")
    vpskit-server backups keep NOW DAILY WEEKLY MONTHLY < names
        of the backup names on stdin, those the retention policy keeps, newest first

A refusal is one line on stderr and exit status 1; a usage error exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .backup import Backup, human_size
from .backups import gfs_keep
from .database import Database
from .docker import Docker
from .drill import Drill
from .effects import Effects
from .healthcheck import HealthCheck
from .history import dir_hash
from .jobs import Worker
from .notify import main as notify_main
from .offsite import Offsite, OffsiteFailed
from .pgupgrade import Upgrade
from .proxy import close_during, open_after, set_maintenance
from .release import Releases, Run
from .restore import Restore
from .stack import healthy, states, wait_healthy
from .state import AttemptParams


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="vpskit-server")
    groups = top.add_subparsers(dest="group", required=True)
    release = groups.add_parser("release").add_subparsers(dest="command", required=True)

    def attempt_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--who", required=True)
        p.add_argument("--timeout", type=int, default=180)
        p.add_argument("--keep", type=int, default=3)
        p.add_argument("--drain", type=int, default=10)
        p.add_argument("--lock-wait", type=int, default=300)

    start = release.add_parser("start")
    start.add_argument("--attempt", required=True)
    start.add_argument("--version", required=True)
    start.add_argument("--hash", required=True)
    start.add_argument("--migrate", default="")
    attempt_options(start)
    back = release.add_parser("rollback")
    back.add_argument("--to", type=int, required=True)
    attempt_options(back)
    follow = release.add_parser("follow")
    follow.add_argument("--attempt", required=True)
    follow.add_argument("--seconds", type=int, default=86400)
    run = release.add_parser("run")
    run.add_argument("--attempt", required=True)
    listed = release.add_parser("list")
    for p in (start, back, follow, run, listed):
        p.add_argument("--app-dir", required=True, type=Path)
    stack = groups.add_parser("stack").add_subparsers(dest="command", required=True)
    stack.add_parser("states").add_argument("--app-dir", required=True, type=Path)
    stack.add_parser("hash").add_argument("--app-dir", required=True, type=Path)
    wait = stack.add_parser("wait")
    wait.add_argument("--app-dir", required=True, type=Path)
    wait.add_argument("--seconds", type=int, default=180)
    wait.add_argument("--label", default="stack")
    db = groups.add_parser("db").add_subparsers(dest="command", required=True)
    for name in ("where", "external", "image", "migrations"):
        db.add_parser(name).add_argument("--app-dir", required=True, type=Path)
    pg = groups.add_parser("pg")
    pg.add_argument("command", choices=("upgrade", "rollback", "drop-old"))
    pg.add_argument("--app-dir", required=True, type=Path)
    pg.add_argument("--backups", required=True, type=Path)
    pg.add_argument("--to", default="")
    pg.add_argument("--lock-wait", type=int, default=300)
    pg.add_argument("--health-timeout", type=int, default=180)
    drill = groups.add_parser("drill")
    drill.add_argument("--app-dir", required=True, type=Path)
    drill.add_argument("--backups", required=True, type=Path)
    drill.add_argument("--which", default="latest")
    drill.add_argument("--source", choices=("local", "offsite"), default="local")
    restore = groups.add_parser("restore")
    restore.add_argument("--app-dir", required=True, type=Path)
    restore.add_argument("--backups", required=True, type=Path)
    restore.add_argument("--name", default="latest")
    restore.add_argument("--source", choices=("local", "offsite"), default="local")
    restore.add_argument("--lock-wait", type=int, default=300)
    restore.add_argument("--health-timeout", type=int, default=180)
    health = groups.add_parser("health")
    health.add_argument("--app-dir", required=True, type=Path)
    health.add_argument("--backups", required=True, type=Path)
    health.add_argument("--port", required=True)
    health.add_argument("--max-backup-age", type=int, default=26)
    health.add_argument("--max-offsite-age", type=int, default=172800)
    backup = groups.add_parser("backup")
    backup.add_argument("--app-dir", required=True, type=Path)
    backup.add_argument("--backups", required=True, type=Path)
    backup.add_argument("--keep", nargs="+", default=["7", "4", "6"])
    backup.add_argument("--lock-wait", type=int, default=300)
    groups.add_parser("offsite").add_subparsers(dest="command", required=True).add_parser("list").add_argument(
        "--app-dir", required=True, type=Path)
    closing = groups.add_parser("proxy").add_subparsers(dest="command", required=True).add_parser("maintenance")
    closing.add_argument("state", choices=("on", "off"))
    closing.add_argument("--app-dir", required=True, type=Path)
    closing.add_argument("--during", default="")
    worker = groups.add_parser("jobs").add_subparsers(dest="command", required=True).add_parser("run")
    worker.add_argument("--app-dir", required=True, type=Path)
    worker.add_argument("--interval", type=float, default=10.0)
    backups = groups.add_parser("backups").add_subparsers(dest="command", required=True)
    backups.add_parser("size").add_argument("bytes", type=int)
    keep = backups.add_parser("keep")
    keep.add_argument("now")
    for period in ("daily", "weekly", "monthly"):
        keep.add_argument(period, type=int)
    return top


def main(argv: list[str], program: Path) -> int:
    if argv[:1] == ["notify"]:  # the command after `--` taken as it is
        return notify_main(argv[1:])
    if argv[:3] == ["db", "sh", "--app-dir"] and len(argv) >= 5:  # SCRIPT and its ARGS taken as they are
        os.chdir(argv[3])
        cmd = Database(Docker(Effects()), Path(argv[3])).argv(argv[4], *argv[5:])
        os.execvp(cmd[0], cmd)  # noqa: S606 - argv, no shell: the script and its arguments as given
    args = parser().parse_args(argv)
    if args.group == "backups" and args.command == "size":
        print(human_size(args.bytes))
        return 0
    if args.group == "backups":
        kept = gfs_keep(args.now, sys.stdin.read().split(), args.daily, args.weekly, args.monthly)
        print("\n".join(kept))
        return 0
    fx = Effects()
    if args.group == "health":
        if args.app_dir.is_dir():
            os.chdir(args.app_dir)
        return HealthCheck(args.app_dir, args.backups, args.port, args.max_backup_age, args.max_offsite_age,
                           fx).run()
    if not args.app_dir.is_dir():
        fx.say(f"vpskit: no app at {args.app_dir}: deploy first")
        return 1
    os.chdir(args.app_dir)  # compose reads the app's folder
    if args.group == "pg":
        run = Upgrade(args.app_dir, args.backups, args.to, fx, program.parent, args.lock_wait, args.health_timeout)
        return {"upgrade": run.run, "rollback": run.rollback, "drop-old": run.drop_old}[args.command]()
    if args.group == "jobs":
        return Worker(args.app_dir, fx, max(args.interval, 1.0)).run()
    if args.group == "proxy":
        if args.during:
            return (close_during if args.state == "on" else open_after)(args.app_dir, fx, args.during)
        return set_maintenance(args.app_dir, args.state == "on", fx)
    if args.group == "drill":
        return Drill(args.app_dir, args.backups, args.which, args.source, fx, program.parent,
                     int(os.environ.get("VPSKIT_LOCK_WAIT", "300"))).run()
    if args.group == "offsite":
        try:
            return Offsite(args.app_dir.name).list()
        except OffsiteFailed as failed:
            fx.say(f"vpskit offsite: {failed}")
            return 1
    if args.group == "backup":
        keep = None if args.keep == ["none"] else tuple(int(k) for k in (args.keep + ["0", "0", "0"])[:3])
        env = os.environ
        return Backup(args.app_dir, args.backups, keep, args.lock_wait, fx, program.parent,
                      now=env.get("VPSKIT_BACKUP_TIME", ""), locked=env.get("VPSKIT_BACKUP_LOCKED") == "1",
                      offsite_soft=env.get("VPSKIT_OFFSITE_SOFT") == "1").run()
    if args.group == "restore":
        return Restore(args.app_dir, args.backups, args.name, args.source, fx, program.parent, args.lock_wait,
                       args.health_timeout).run()
    if args.group == "db":
        database = Database(Docker(fx), args.app_dir)
        if args.command == "external":
            return 0 if database.external() else 1
        if args.command == "migrations":
            print("\n".join(database.applied_migrations()))
            return 0
        print(database.where() if args.command == "where" else database.image())
        return 0
    if args.group == "stack":
        if args.command == "hash":
            try:
                print(dir_hash(args.app_dir))
            except OSError:  # a file missing: nothing released can match
                return 1
            return 0
        if args.command == "wait":
            return 0 if wait_healthy(fx, args.seconds, args.label) else 1
        found = states(Docker(fx))
        print("\n".join(s.line() for s in found))
        return 0 if healthy(found) else 1
    releases = Releases(args.app_dir, fx, program)
    if args.command == "run":
        return Run(args.app_dir, args.attempt, fx).main()
    if args.command == "follow":
        return releases.follow(args.attempt, args.seconds)
    if args.command == "list":
        return releases.list()
    params = AttemptParams(version=getattr(args, "version", "?"), files_hash=getattr(args, "hash", ""),
                           who=args.who, timeout=args.timeout, keep=args.keep, drain=args.drain,
                           lock_wait=args.lock_wait,
                           migrate=tuple(m for m in getattr(args, "migrate", "").split(",") if m))
    if args.command == "start":
        return releases.start(args.attempt, params)
    return releases.rollback(args.to, params)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path(sys.argv[0]).resolve()))
