"""Pure functions that build the shell command lines vpskit runs on a server. Tested as strings; the code
that runs them over SSH lives in facts.py and operations.py."""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

q = shlex.quote


def compose(app_dir: str, *args: str) -> str:
    """`docker compose` in the app's directory, so .env and the project name are picked up from there."""
    return f"cd {q(app_dir)} && docker compose {' '.join(q(a) for a in args)}"


STARTING_WAIT = 30  # seconds: a few of Docker's healthcheck intervals (10 s in the compose file)


def compose_state(app_dir: str, project: str, refs: tuple[str, ...] = ()) -> str:
    """Prints the hash of the compose file and .env now on the server, the hash recorded by the last
    successful apply, then one line per existing container of the project: service, container id, image
    id, state, health; then the image id on the server of each of `refs`. (Compose's own `config --hash`
    does not match its container labels on every version, so vpskit records what it applied.)"""
    fmt = (
        '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}} {{.Image}} {{.State.Status}} '
        "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
    )
    d = q(app_dir)
    ids = f"docker ps -aq --filter label=com.docker.compose.project={q(project)}"
    images = "".join(f"echo image {q(r)} $({image_id(r)}); " for r in refs)
    # A release ends when its container answers ready; Docker's own healthcheck (every 10 s) may still say
    # "starting" for a few seconds after. A deploy run again at once waits for that verdict (at most
    # STARTING_WAIT s) rather than read "starting" as unhealthy and release again.
    starting = f"docker ps -q --filter label=com.docker.compose.project={q(project)} --filter health=starting"
    settle = f"for _ in $(seq {STARTING_WAIT}); do [ -z \"$({starting})\" ] && break; sleep 1; done; "
    return (
        "if command -v docker >/dev/null; then "
        f"if [ -f {d}/docker-compose.yml ]; then {settle}"
        f"echo files $({files_hash(app_dir)}); echo applied $(cat {d}/.applied 2>/dev/null); "
        f"echo \"last $(tail -n 1 {d}/releases/log 2>/dev/null)\"; "
        f"for c in $({ids}); do docker inspect -f {q(fmt)} $c | sed 's/^/container /'; done; fi; "
        f"{images}fi"
    )


def file_states(paths) -> str:
    """One line per path: `path sha256 mode user group`, or `path missing`."""
    checks = " ".join(q(p) for p in paths)
    return (f"for f in {checks}; do if [ -f \"$f\" ]; then printf '%s %s ' \"$f\" "
            f"\"$(sha256sum < \"$f\" | cut -c1-64)\"; stat -c '%a %U %G' \"$f\"; "
            f"else echo \"$f missing\"; fi; done")


def private_dir(path: str, owner: str) -> str:
    """A directory only `owner` and root can enter (700), with its parents (755, root). Not emptied: another
    deploy may be uploading into it at this moment (each run names its uploads apart); leftovers of runs cut
    short go after an hour."""
    return (f"mkdir -p -m 755 {q(path.rsplit('/', 1)[0] or '/')} && install -d -m 700 -o {q(owner)} {q(path)} && "
            f"find {q(path)} -mindepth 1 -mmin +60 -delete")


def files_hash(app_dir: str) -> str:
    """The hash of what a release applies (the compose file, the .env and the proxy route beside them), computed
    by the server program the deploy shipped (vpskit/server/history.py dir_hash, the rule's one home); empty when
    it cannot (a server deployed by a vpskit older than the server program: that deploy releases once)."""
    d = q(app_dir)
    return f"{d}/bin/vpskit-server stack hash --app-dir {d} 2>/dev/null"


@dataclass(frozen=True)
class Release:
    """One release attempt as the deploy asks the server for it (vpskit-server release start)."""

    app_dir: str
    attempt: str  # unique id of the attempt: its log and status files on the server
    version: str
    files_hash: str  # sha256 of compose file + .env + proxy route as pushed to {app_dir}/next
    who: str  # for the release log and the lock holder: git author or CI run, and the machine
    timeout: int = 180
    keep: int = 3
    drain: int = 10
    lock_wait: int = 300
    # Migrations the one-shot `migrate` service applies before the new app starts; the release checks that
    # each is recorded afterwards. Empty: no runner (the app applies its own, or none is pending).
    migrate: tuple[str, ...] = ()


def release_start(r: Release) -> str:
    """Starts the release detached on the server (it finishes without this SSH session) and follows its log;
    exits with its status (vpskit/server/release.py)."""
    cmd = (f"{q(r.app_dir)}/bin/vpskit-server release start --app-dir {q(r.app_dir)} --attempt {q(r.attempt)} "
           f"--version {q(r.version)} --hash {q(r.files_hash)} --who {q(r.who)}"
           f"{_attempt_options(r.timeout, r.keep, r.drain, r.lock_wait)}")
    return cmd + (f" --migrate {q(','.join(r.migrate))}" if r.migrate else "")


def release_rollback(app_dir: str, target: int, who: str, timeout: int, keep: int, drain: int, lock_wait: int) -> str:
    """Releases kept release number `target` again (compose file, .env with today's secrets, and route), the same
    way as a deploy."""
    return (f"{q(app_dir)}/bin/vpskit-server release rollback --app-dir {q(app_dir)} --to {int(target)} "
            f"--who {q(who)}{_attempt_options(timeout, keep, drain, lock_wait)}")


def release_list(app_dir: str) -> str:
    """The release log and the releases kept for rollback (reads only)."""
    return f"{q(app_dir)}/bin/vpskit-server release list --app-dir {q(app_dir)}"


def _attempt_options(timeout: int, keep: int, drain: int, lock_wait: int) -> str:
    return f" --timeout {int(timeout)} --keep {int(keep)} --drain {int(drain)} --lock-wait {int(lock_wait)}"


def release_history(app_dir: str) -> str:
    """Prints `current N` and `release N<TAB>VERSION<TAB>CONFIG<TAB>FROM<TAB>TIME` per kept release (releases/index);
    on a server whose releases an older vpskit kept by version, `current VERSION` and `older VERSION` per
    release, oldest first (vpskit/releases.py History.parse)."""
    d = q(app_dir)
    return (f"if [ -d {d}/releases ]; then echo \"current $(cat {d}/current 2>/dev/null)\"; "
            f"if [ -f {d}/releases/index ]; then sed 's/^/release /' {d}/releases/index; "
            f"else ls -1tr {d}/releases | sed -n 's/\\.yml$//p' | sed 's/^/older /'; fi; fi; true")


def applied_migrations(app_dir: str) -> str:
    """One line `migration NAME` per Payload migration recorded in the app's database (payload_migrations), as the
    server program reads them for its releases (its db service, or the client container of an external database);
    nothing when the database is not running or the table does not exist yet."""
    d = q(app_dir)
    return (f"[ -x {d}/bin/vpskit-server ] && {d}/bin/vpskit-server db migrations --app-dir {d} 2>/dev/null "
            "| sed '/^$/d; s/^/migration /'; true")


def role_password(app_dir: str) -> str:
    """Prints the stored password (pg_authid.rolpassword: a SCRAM or md5 verifier) of the role the app's database
    was created for, when the stack's db service runs; nothing otherwise."""
    sql = "select rolpassword from pg_authid where rolname = current_user"
    inner = f'psql -XAt -U "$POSTGRES_USER" -d postgres -c {q(sql)}'
    return (f"cd {q(app_dir)} 2>/dev/null && command -v docker >/dev/null && "
            f"[ -n \"$(docker compose ps -q db 2>/dev/null)\" ] && docker compose exec -T db sh -c {q(inner)} "
            "2>/dev/null; true")


def config_keys(app_dir: str, conf_dir: str) -> str:
    """Prints `operator KEY...` with the operator's variables the server's live .env names in its header
    (`operator?` for an .env without that header, nothing without an .env), then `notify` when the root-only
    configuration sends alerts. Names only: no value leaves the server."""
    env, conf = q(f"{app_dir}/.env"), q(f"{conf_dir}/offsite.env")
    return (f"if [ -f {env} ]; then sed -n 's/^# vpskit operator keys:/operator/p' {env} | grep . || echo 'operator?'; "
            f"fi; if grep -q '^export NOTIFY_URL=' {conf} 2>/dev/null; then echo notify; fi; true")


def stop(app_dir: str, app_name: str, lock_wait: int, args: tuple[str, ...], done: str) -> str:
    """`docker compose ARGS` for the app under its lock (the flock vpskit/server/locks.py takes: never amid a
    release, restore or rollback), saying what was serving and what it did; it exits with compose's status when
    compose fails (its output shown), not with that of the lines that tidy the output."""
    d, lock = q(app_dir), q(f"{app_dir}/.vpskit.lock")
    busy = (f"vpskit: another operation on {app_name} still holds its lock after {int(lock_wait)}s "
            f"($(cat {d}/.vpskit.lock.holder 2>/dev/null)): nothing was stopped; run this again when it has finished")
    # What was serving, read before it stops, so the output says from what to what.
    serving = "$(docker inspect -f '{{.Config.Image}}' $(docker compose ps -q app | head -1) 2>/dev/null)"
    compose = f"docker compose {' '.join(q(a) for a in args)}"
    failed = (f"vpskit stop: {compose} failed (exit $rc, its output above): {app_name} may be partly stopped; "
              "run this again, or see docker compose ps on the server")
    # The jobs worker's request in flight (jobs running in the app) ends first; none starts meanwhile.
    jobs = q(f"{app_dir}/.jobs.lock")
    quiet = (f"if [ -e {jobs} ]; then exec 9>>{jobs}; flock -w {int(lock_wait)} 9 || echo \"vpskit stop: jobs still "
             f"run in the app after {int(lock_wait)}s: stopping it anyway (a job in flight is cut off)\" >&2; fi; ")
    locked = (f"cd {d} && {{ flock -w {int(lock_wait)} 8 || {{ echo \"{busy}\" >&2; exit 1; }}; {quiet}"
              f"was={serving}; out=$({compose} 2>&1); rc=$?; "
              "printf '%s\\n' \"$out\" | grep -v -e ' Stopping$' -e ' Removing$' -e '^$'; "
              f"if [ \"$rc\" != 0 ]; then echo \"{failed}\" >&2; exit \"$rc\"; fi; "
              # Stopped on purpose: the health timer leaves it stopped (the next release removes the mark).
              f"echo \"{args[0]} by tasks/stop.py, $(date -u +%Y-%m-%dT%H:%M:%SZ)\" > {d}/.vpskit-stopped; "
              f"echo \"vpskit stop: {app_name} was serving ${{was:-nothing}}; now {done}; start it again with: "
              f"pyinfra inventory.py deploy.py\"; }} 8>>{lock}")
    return f"if [ -d {d} ]; then {locked}; else echo 'vpskit stop: nothing deployed at {app_dir}'; fi"


def image_id(ref: str) -> str:
    """Prints the image id for `ref`, or nothing when the server does not have it (or has no Docker)."""
    return f"docker image inspect -f '{{{{.Id}}}}' {q(ref)} 2>/dev/null || true"


def image_tag(image_id: str, ref: str) -> str:
    """Names an image the server already has (by id) `ref` as well."""
    return f"docker tag {q(image_id)} {q(ref)}"


def image_pull(ref: str) -> str:
    """Pulls `ref` on the server; when that fails, docker's own reason is followed by one line with the fix."""
    why = (f"vpskit: could not pull {ref} on the server (the line above says why): check the image name and that "
           'the server reaches its registry, or set image_transport = "ssh" to ship it from this machine')
    return f"docker pull --quiet {q(ref)} || {{ echo {q(why)} >&2; exit 1; }}"


DB_CHAIN = "VPSKIT-DB"


def database_firewall(clients: tuple[str, ...], port: int = 5432) -> str:
    """The db server's packet filter for postgres: new connections to `port` of a container (as Docker
    forwards them, after its DNAT) that come from outside this server's Compose networks are let through
    from the app servers' addresses (IPv4, checked in settings) only; everything else is dropped.

    - The chain's whole content is one iptables-restore transaction (declaring the chain flushes and refills
      it in the same commit): never half loaded, the same after any number of runs.
    - Matched after DNAT, on the port of the container (Compose networks are bridges br-...), not on the
      published address: a packet routed straight to the container's address is caught too. Packets from a
      Compose bridge are this server's own containers (a migration runner reaching `db`); replies pass.
    - The hook is the first rule of DOCKER-USER (created if missing: Docker keeps it, rules and all, and only
      makes FORWARD jump to it), so no other rule there can let a connection past it.
    `-w` waits for the xtables lock Docker holds while it sets up its own rules, instead of failing."""
    if not clients:
        raise ValueError("database_firewall: no clients")
    for c in clients:  # checked in settings already; a host name would be resolved at boot, or never
        ipaddress.IPv4Network(c, strict=False)  # ValueError
    rules = [f":{DB_CHAIN} - [0:0]", *(f"-A {DB_CHAIN} -s {c} -j RETURN" for c in clients), f"-A {DB_CHAIN} -j DROP"]
    # echo, not printf, and double quotes: the line sits single-quoted in a unit's ExecStart, where systemd
    # would expand a %-specifier. The quotes keep "[0:0]" and "*filter" from the shell's globbing.
    restore = "{ " + " ".join(f'echo "{r}";' for r in ["*filter", *rules, "COMMIT"]) + " }"
    match = f"! -i br-+ -o br-+ -p tcp --dport {int(port)} -m conntrack --ctdir ORIGINAL -j {DB_CHAIN}"
    return (f"{restore} | iptables-restore -w --noflush && "
            "{ iptables -w -n -L DOCKER-USER >/dev/null 2>&1 || iptables -w -N DOCKER-USER; } && "
            f"{{ iptables -w -C DOCKER-USER {match} 2>/dev/null || iptables -w -I DOCKER-USER 1 {match}; }}")


def database_firewall_unit(app: str, clients: tuple[str, ...]) -> str:
    """A systemd unit that loads database_firewall() before Docker starts (Docker publishes postgres's port as
    it starts: at boot there is no moment with the port published and the filter missing), again whenever
    Docker restarts (PartOf), and on failure after 2 s. RestartMode=direct keeps the unit starting through
    those retries, so Docker, ordered after it, waits for the filter (fails closed) rather than starting
    without it; no start limit, so it never gives up and lets Docker start unfiltered."""
    return (f"[Unit]\nDescription=vpskit: postgres of {app} reachable from the app servers only\n"
            "Before=docker.service\nPartOf=docker.service\nStartLimitIntervalSec=0\n\n"
            "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
            "Restart=on-failure\nRestartSec=2\nRestartMode=direct\n"
            f"ExecStart=/bin/sh -c {q(database_firewall(clients))}\n\n"
            "[Install]\nWantedBy=multi-user.target docker.service\n")
