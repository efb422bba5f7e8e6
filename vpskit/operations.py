"""pyinfra operations of vpskit: each reads facts and yields commands only where the server differs."""

from __future__ import annotations

import hashlib
import posixpath
import secrets
import shlex
import sys
import tarfile
from dataclasses import dataclass, replace
from io import BytesIO

import gevent.hub
from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, FunctionCommand, OperationError, operation

from vpskit import commands, images, proxy
from vpskit import rolling as rollout
from vpskit import shipping as ship
from vpskit.facts import ComposeStack, DockerImageId, FileStates, ProxyState, SshServerPort, UfwStatus
from vpskit.server import health, history

# A refusal raised while operations run (a port taken on the server) is one line: pyinfra prints it as "Operation
# error in ...: <message>" and exits 1; gevent would print the greenlet's traceback above it first. (Not through
# Hub.NOT_ERROR: the hub of an SSH run sets its own on the instance once its resolver starts.)
_print_exception = gevent.hub.Hub.print_exception


def _print_unless_refusal(self, context, kind, value, tb):
    if kind is None or not issubclass(kind, OperationError):
        _print_exception(self, context, kind, value, tb)


gevent.hub.Hub.print_exception = _print_unless_refusal


@operation()
def image_present(ref: str, transport: str = "ssh", build=None, shipping=None):
    """
    Ensure the server has image ``ref``.

    + ref: image reference, e.g. ``example:3f9c2a1`` or ``postgres:17``
    + transport: ``ssh`` ships the image from this machine over the SSH connection (no registry needed);
      ``registry`` pulls it on the server when absent
    + build: for ``ssh``, a ``images.LocalBuild`` that makes ``ref`` on this machine when it is missing
    + shipping: for ``ssh``, a ``shipping.Shipping`` (only missing layers, or the whole image; what this
      machine keeps); default: only missing layers, nothing tidied

    **Example:**

    .. code:: python

        image_present(name="Database image on the server", ref="postgres:17", transport="ssh", _sudo=True)
    """
    current = host.get_fact(DockerImageId, ref=ref)
    if transport == "registry":
        if current:
            host.noop(f"image {ref} is on the server")
            return
        yield commands.image_pull(ref)
        return

    how = shipping or ship.Shipping()
    local = images.local_image_id(ref)
    if current and (not local or local == current):
        # A version names its content (sources, Dockerfile, base image): the server's copy is that image,
        # even when this machine no longer has it (pruned here): nothing to build or send.
        host.noop(f"image {ref} ({current[7:19]}) is on the server")
        return
    if not local and build is None:
        raise ValueError(f"image {ref} is not on this machine: build or pull it here first")
    if local and host.get_fact(DockerImageId, ref=local) == local:
        # The same image under another name (a staging copy, the same app under two names): a tag, no bytes.
        yield commands.image_tag(local, ref)
        return
    if not local:
        yield FunctionCommand(_build, (build, how), {})
    yield FunctionCommand(_ship, (ref, how), {})


FORWARDING_REFUSED = "the server refuses SSH port forwarding (sshd AllowTcpForwarding no): whole image sent instead"


def _build(state, host, build, how) -> bool:
    if how.method == "layers" and ship.from_local_registry(build.ref, how.port):
        print(f"    {build.ref} taken from this machine's registry (no build needed)", file=sys.stderr)
        return True
    try:
        build.run()
    except RuntimeError as err:
        logger.error(f"{host.print_prefix}{err}")
        return False
    return True


def _ship(state, host, ref: str, how) -> bool:
    if how.method == "layers" and "@" not in ref:
        try:
            shipped = ship.ship_layers(host, ref, how.image, how.port)
        except ship.ForwardingRefused:
            logger.warning(f"{host.print_prefix}{FORWARDING_REFUSED}. Allow forwarding for the deploy user to send "
                           "only the layers the server lacks, or set ship_with = \"stream\" to skip this try")
        except RuntimeError as err:
            logger.error(f"{host.print_prefix}{err}")
            return False
        else:
            print(f"    {shipped.line()}", file=sys.stderr)
            if how.keep:
                repo, version = ref.rsplit(":", 1)
                removed = ship.tidy(repo, how.keep, version, how.port, how.image)
                if removed:
                    print(f"    this machine keeps {how.keep} version(s) of {repo}: removed {', '.join(removed)}",
                          file=sys.stderr)
            return True
    return images.ship_over_ssh(host, ref)


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: str
    mode: str = "644"
    user: str = "root"
    group: str = "root"
    together: str = ""  # files with the same name here go in place as one: all or none of this run's


def _tar(members: dict[str, str]) -> bytes:
    """An uncompressed tar of `members` (name: text), each a regular file of mode 600."""
    out = BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, BytesIO(data))
    return out.getvalue()


@operation()
def files_in_place(files: list[ManagedFile], staging: str, user: str = "root", remove: tuple[str, ...] = ()):
    """
    Put many small files on the server in one step: a single fact reads every file's sha256, mode and
    owner, and only the files that differ are uploaded. No content is ever shown (not even with --diff).
    A secret is never readable by anyone but its owner and root, not even for an instant: every upload
    lands in ``staging``, a directory only ``user`` (the SSH user, who uploads) and root can enter, gets its
    final owner and mode there, and is then moved into place.

    + files: ``ManagedFile`` (path, content, mode, user, group) for each file; missing parent
      directories are created (755, root)
    + staging: the private upload directory (mode 700), best on the same filesystem as the secrets, so
      that the final move is a rename
    + user: the SSH user, who owns ``staging`` (uploads go over SFTP as that user, before sudo)
    + remove: paths that must not exist (files an older version shipped), removed where they do

    Files marked ``together`` (a release's compose file, .env, route) are a set: when one differs, all are
    uploaded, and they are moved into place in one command under a lock, so two deploys at once leave one
    deploy's whole set, never a mix.

    **Example:**

    .. code:: python

        files_in_place(name="App files", files=[ManagedFile("/opt/app/.env", text, "600", "deploy", "deploy")],
                       staging="/opt/app/.upload", user="deploy", _sudo=True)
    """
    states = host.get_fact(FileStates, paths=tuple(f.path for f in files) + tuple(remove))
    run = secrets.token_hex(4)  # two deploys at once upload side by side, never into each other's files

    def differs(f: ManagedFile) -> bool:
        now = states.get(f.path)
        return now is None or now["sha256"] != hashlib.sha256(f.content.encode()).hexdigest()

    sets = {f.together for f in files if f.together and differs(f)}
    uploads = [f for f in files if differs(f) or f.together in sets]
    uploaded = {id(f) for f in uploads}
    changed = len(uploads)
    moves: dict[str, list[tuple[str, str]]] = {}
    if uploads:
        # One archive for every file that differs: one SFTP upload and one sudo command, whatever their number
        # (a first deploy puts some forty files; one upload and one command each cost seconds, more over a slow
        # link). It lands in the private folder and is unpacked there, by root, under names of this run.
        parts = {f"{run}-{i}.new": f for i, f in enumerate(uploads)}
        archive = f"{staging}/{run}.tar"
        yield commands.private_dir(staging, user)
        yield FileUploadCommand(BytesIO(_tar({name: f.content for name, f in parts.items()})), archive,
                                remote_temp_filename=f"{staging}/{run}.part")
        # -m: the files are dated now, not 1970 (the archive's): another deploy's private_dir removes what is older
        # than an hour in this folder, and this run's release set is moved into place by a later command.
        steps = [f"tar -xmf {archive} -C {staging} --no-same-owner", f"rm -f {archive}"]
        for name, f in parts.items():
            part = f"{staging}/{name}"
            steps.append(f"chown {f.user}:{f.group} {part} && chmod {f.mode} {part} && "
                         f"mkdir -p -m 755 {posixpath.dirname(f.path)}")
            if f.together:
                moves.setdefault(f.together, []).append((part, f.path))
            else:
                steps.append(f"mv -f {part} {f.path}")
        yield " && ".join(steps)
    for f in files:
        now = states.get(f.path)
        if id(f) not in uploaded and (now["mode"], now["user"], now["group"]) != (f.mode.lstrip("0") or "0",
                                                                                    f.user, f.group):
            yield f"chown {f.user}:{f.group} {f.path} && chmod {f.mode} {f.path}"
            changed += 1
    for name, pairs in moves.items():
        lock = shlex.quote(f"{posixpath.dirname(pairs[0][1])}/.{name}.lock")
        yield f"( flock -w 120 9 && {' && '.join(f'mv -f {a} {b}' for a, b in pairs)} ) 9>{lock}"
    for path in remove:
        if states.get(path) is not None:
            yield f"rm -f {shlex.quote(path)}"
            changed += 1
    if not changed:
        host.noop(f"{len(files)} files up to date")


@operation()
def firewall(ports: tuple[int, ...] = (80, 443)):
    """
    ufw enabled, allowing only the SSH port in use and ``ports`` in. The SSH rule is added before ufw is
    enabled, in the same command, so the operator cannot be locked out by this operation; when the SSH port
    of this connection cannot be read, the firewall is not enabled at all.

    + ports: other TCP ports to allow (HTTP and HTTPS by default); the SSH port is read from the server's
      side of this very connection (SSH_CONNECTION, read without sudo, which would drop it)

    **Example:**

    .. code:: python

        firewall(name="Firewall: SSH, HTTP and HTTPS only", _sudo=True)
    """
    status = host.get_fact(UfwStatus)
    ssh_port = host.get_fact(SshServerPort, _sudo=False)
    if not ssh_port:
        raise OperationError("cannot read the SSH port of this connection (SSH_CONNECTION is empty): the firewall "
                             "is not enabled, since it could lock you out; allow your SSH port with ufw by hand, "
                             "or set firewall = False")
    wanted = [f"{p}/tcp" for p in (ssh_port, *ports)]
    missing = [r for r in wanted if r not in status["rules"]]
    if not missing and status["active"]:
        host.noop(f"ufw active, allowing {', '.join(wanted)}")
        return
    allow = " && ".join(f"ufw allow {r}" for r in missing) or "true"
    yield f"{allow} && ufw --force enable"


@operation()
def proxy_serving(app: str, ports: tuple[str, ...], image: str, caddyfile: str, acme_ca_root: str = ""):
    """
    The server's one proxy running, publishing every app's ports (this app's ``ports`` included) and with
    the global options in ``caddyfile``. Other apps' ports are read from the server, so deploying one app
    keeps every other app's routes and ports. A port this app needs that something else on the server
    already listens on fails the operation before anything changes.

    + app: the app's name (its ports file on the server)
    + ports: the compose ``ports`` entries this app needs, e.g. ``("127.0.0.1:3000:3000",)`` or
      ``("80:80", "443:443")``; empty to give its ports back
    + image: the proxy's image (already on the server)
    + caddyfile: the global Caddyfile (options; routes come from each app's release)
    + acme_ca_root: path on the server of a private ACME server's root, mounted into the proxy

    **Example:**

    .. code:: python

        proxy_serving(name="Proxy", app="shop", ports=("80:80", "443:443"), image="caddy:2",
                      caddyfile=text, _sudo=True)
    """
    state = host.get_fact(ProxyState)
    others = {a: p for a, p in state["ports"].items() if a != app}
    published = proxy.union(state["ports"]) if state["running"] else ()
    wanted = proxy.union({**others, app: ports})
    compose = proxy.compose_file(wanted, image, acme_ca_root)
    sha = hashlib.sha256
    same = (state["compose"] == sha(compose.encode()).hexdigest()
            and state["caddyfile"] == sha(caddyfile.encode()).hexdigest()
            and state["ports"].get(app, ()) == ports and state["running"])
    if same:
        host.noop(f"proxy {proxy.CONTAINER} running, publishing {', '.join(wanted) or 'nothing'}")
        return
    own = proxy.held_by_app(app, ports, state["held"])
    busy = [p for p in proxy.taken(ports, published, state["listening"])
            if not any(p in held for cid, _, held in state["held"] if cid in own)]
    if busy:
        raise OperationError(f"port {', '.join(map(str, busy))} is already in use on the server by another "
                             "program: free it, or set publish_port to a free port; nothing was changed")
    if set(wanted) != set(published) and state["running"] and others:
        logger.warning(f"{host.print_prefix}the proxy's published ports change ({', '.join(wanted)}): it is "
                       f"recreated, a pause of about a second for {', '.join(sorted(others))}")
    if own:
        # Once, when moving an install from before the proxy: its app container publishes the port itself and
        # must give it up; the site is down until this deploy's release is ready (tens of seconds).
        logger.warning(f"{host.print_prefix}the app's own container publishes {', '.join(ports)}: it is removed so "
                       "that the proxy can take the port over; the site is down until the new release is ready")
        yield f"docker rm -f {' '.join(own)}"
    yield FunctionCommand(_proxy_up, (app, ports, image, caddyfile, acme_ca_root, state), {})


PROXY_TRIES = 3


def _proxy_up(state_, host, app: str, ports: tuple[str, ...], image: str, caddyfile: str, acme_ca_root: str,
              state: dict) -> bool:
    """The proxy's files for this app's `ports` and every other app's as `state` read them, applied only while
    the server still has those (proxy.up_command). When another deploy changed them meanwhile, they are read
    again and the union applied again (at most PROXY_TRIES times): no deploy drops another's port."""
    for _ in range(PROXY_TRIES):
        others = {a: p for a, p in state["ports"].items() if a != app}
        files = {"docker-compose.yml": proxy.compose_file(proxy.union({**others, app: ports}), image, acme_ca_root),
                 "etc/Caddyfile": caddyfile, f"ports/{app}": "".join(f"{p}\n" for p in ports)}
        ok, out = host.run_shell_command(proxy.up_command(files, app, proxy.others_digest(state, app)),
                                         _sudo=True, print_output=True)
        if ok:
            return True
        if proxy.CHANGED not in out.stdout:
            last = (out.stderr_lines or out.stdout_lines or ["no output"])[-1]
            logger.error(f"{host.print_prefix}{last}")
            return False
        logger.info(f"{host.print_prefix}another deploy changed the proxy's ports meanwhile: reading them again")
        _, read = host.run_shell_command(proxy.state_command(), _sudo=True)
        state = proxy.parse_state(read.stdout_lines)
    logger.error(f"{host.print_prefix}the proxy's ports kept changing under other deploys: run this deploy again")
    return False


@operation()
def stack_applied(release: commands.Release, project: str, images_by_service: dict[str, str], url: str = "",
                  pending_migrations: tuple[str, ...] = (), rolling: bool = False):
    """
    Bring the app to its desired state with a release that never stops the serving version first: the new
    app container starts beside the old one, the proxy switches to it once it answers ready, and the old one
    drains and stops. The release runs on the server, detached, under the app's lock; this operation follows
    its log and fails with its one-line reason.

    + release: a ``commands.Release`` (app folder, attempt id, version, hash of the pushed files, who,
      timeout, images kept, drain, lock wait)
    + project: compose project name (labels of its containers)
    + images_by_service: service name -> image reference the service must run
    + url: where the app answers, for the closing message
    + pending_migrations: migrations the compose file's ``migrate`` service applies before the new app starts
    + rolling: one of several app servers: the release is recorded in ``vpskit.rolling`` (started, released)

    Changes nothing when the pushed files are the ones last released and every service runs its image and
    is healthy (vpskit.health).
    """
    stack = host.get_fact(ComposeStack, app_dir=release.app_dir, project=project,
                          refs=tuple(images_by_service.values()))
    if stack.get("last"):
        last = history.LogLine.parse(stack["last"])
        logger.info(f"{host.print_prefix}last release attempt: {last.version} ({last.result}, {last.seconds}s, "
                    f"{last.at}, {last.who}){'' if last.reason in ('', '-') else ': ' + last.reason}")
    reasons = []
    if not stack["applied"] or release.files_hash != stack["applied"]:
        reasons.append("configuration changed" if stack["applied"] else "not deployed yet")
    elif stack["files"] != stack["applied"]:
        # A release attempt cut short (its process killed) put its files in place and recorded nothing.
        reasons.append("the files in place are not the ones last released")
    for service, ref in images_by_service.items():
        current = stack["services"].get(service, {})
        if current.get("count", 1) > 1:
            reasons.append(f"{service}: {current['count']} containers (one left by an attempt cut short)")
        if "container" not in current:
            reasons.append(f"{service}: not created")
        elif current["image"] != stack["images"].get(ref):
            reasons.append(f"{service}: new image")
        elif not health.service_healthy(current["state"], current["health"]):
            reasons.append(f"{service}: {current['state']}/{current['health']}")
    if pending_migrations:
        reasons.append(f"pending migrations: {', '.join(pending_migrations)}")
    if not reasons:
        host.noop(f"stack {project}: every service healthy and as configured; the app answers at {url}")
        return
    logger.info(f"{host.print_prefix}stack {project}: {'; '.join(reasons)}; releasing {release.version} "
                f"(attempt {release.attempt}, up to {release.timeout}s to get ready)")
    start = commands.release_start(replace(release, migrate=tuple(pending_migrations)))
    if rolling:
        yield FunctionCommand(rollout.started, (), {})
    yield FunctionCommand(_run_visibly, (start,), {})
    if rolling:
        yield FunctionCommand(rollout.released, (), {})
    yield FunctionCommand(_announce, (f"stack {project} healthy; the app answers at {url}",), {})


@operation(is_idempotent=False)
def rolled_back(app_dir: str, target: int | None, who: str, timeout: int, keep: int, drain: int, lock_wait: int):
    """
    Put back the release this run replaced on an app server whose rollout stopped on another server (run
    under ``_if=vpskit.rolling.must_go_back``): the same zero-downtime switch, to that release (its version and
    its configuration: a failed settings-only rollout goes back to the settings before, not to an older version).

    + app_dir: the app's directory on the server
    + target: the number of the release serving there before this run (None: there was none to go back to)
    + who, timeout, keep, drain, lock_wait: as for a release (vpskit-server release rollback)
    """
    if not rollout.must_go_back(host.name):  # always so while the run is planned: nothing to predict
        return
    failed = ", ".join(rollout.failed())
    if target is None:
        yield FunctionCommand(_announce, (f"the rollout failed on {failed}; nothing served here before this run, "
                                          "so this server keeps the new release",), {})
        return
    yield FunctionCommand(_announce, (f"the rollout failed on {failed}: this server goes back to release {target}, "
                                      "the one it served before this run, so that every app server runs the same "
                                      "version",), {})
    yield FunctionCommand(_run_visibly, (commands.release_rollback(app_dir, target, who, timeout, keep, drain,
                                                                   lock_wait),), {})


@operation()
def backup_before_update(app_dir: str, project: str, app_ref: str, command: str, database_external: bool = False):
    """
    Take a backup when a running app is about to get a new image; nothing on a first deploy or when the
    app's image is unchanged.

    + app_dir: the app's directory on the server
    + project: compose project name
    + app_ref: the image reference the app is about to run
    + command: the backup command (vpskit-server backup with its arguments)
    + database_external: the database is not a service of the stack (DATABASE_URL: a managed Postgres)
    """
    stack = host.get_fact(ComposeStack, app_dir=app_dir, project=project, refs=(app_ref,))
    app = stack["services"].get("app")
    db = stack["services"].get("db")
    if not app or (not database_external and (not db or db["state"] != "running")):
        host.noop("no running app to back up")
        return
    if app["image"] == stack["images"].get(app_ref):
        host.noop("the app's image is unchanged")
        return
    # Shown as it runs: a wait for a backup already running says so, and the backup says its name and sizes.
    yield FunctionCommand(_run_visibly, (f"{command} 2>&1",), {})


def _run_visibly(state, host, command: str) -> bool:
    """Runs a long command with its output shown as it comes (progress while waiting for health)."""
    ok, _ = host.run_shell_command(command, _sudo=True, print_output=True)
    return ok


def _announce(state, host, message: str) -> bool:
    logger.info(f"{host.print_prefix}{message}")
    return True


@operation(is_idempotent=False)
def report(command: str, failure: str = "failed", follow: bool = False):
    """
    Run a read-only check on the server and print its output line by line, whatever the result; the
    operation (and the pyinfra run) fails when the command exits non-zero.

    + command: the shell command (run with the operation's _sudo)
    + failure: the message logged on failure, before the command's last line
    + follow: stream the output as it comes (for commands that run until interrupted)
    """
    yield FunctionCommand(_report, (command, failure, follow), {})


def failure_line(failure: str, lines: list[str]) -> str:
    """What a failed report says: its last line after `failure`, which that line may already start with."""
    last = (lines or ["no output"])[-1]
    return last if last.startswith(f"{failure}:") else f"{failure}: {last}"


def _report(state, host, command: str, failure: str, follow: bool) -> bool:
    ok, out = host.run_shell_command(command, _sudo=True, print_output=follow)
    if not follow:
        for line in out.stdout_lines:
            logger.info(f"{host.print_prefix}{line}")
    if not ok:
        logger.error(f"{host.print_prefix}{failure_line(failure, out.stdout_lines or out.stderr_lines)}")
    return ok
