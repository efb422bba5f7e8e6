"""The steps deploy.py reads as: each a few pyinfra operations, all idempotent."""

from __future__ import annotations

import dataclasses
import secrets
import time
from functools import cache
from io import BytesIO
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FactBase, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, systemd

from vpskit import (
    app_check,
    build_database,
    commands,
    engine,
    envfile,
    images,
    jobs,
    media,
    migrate_runner,
    node_version,
    offsite,
    proxy,
    rolling,
    settings,
    shipping,
    tasks,
)
from vpskit.database import ExternalDatabase
from vpskit.facts import AppliedMigrations, ProxyState, ReleaseHistory
from vpskit.operations import (
    ManagedFile,
    backup_before_update,
    image_present,
    proxy_serving,
    rolled_back,
    stack_applied,
)
from vpskit.operations import firewall as ufw
from vpskit.render import render
from vpskit.server import history
from vpskit.server import jobs as jobs_server

ROOT = Path(__file__).resolve().parent.parent
SUDO = {"_sudo": True}
CACHE_HANDLER = "vpskit-cache-handler.cjs"  # in the build context's root: /app/ in the image (templates/Dockerfile)


@cache
def _plan(data_items: tuple, engine_found: tuple = ()) -> dict:
    s = settings.load(dict(data_items))
    s["health_start_interval"] = engine.health_start_interval(s["docker_source"], dict(engine_found))
    app_path = (ROOT / s["app_path"]).resolve()
    s["app"] = app_check.check(app_path, s["package_manager"])
    s["app_path_abs"] = app_path
    node_version.settle(s)  # refused here when node_image cannot give the Node the app asks for
    jobs.check(s["app"].jobs, s["jobs_worker"], s["app"].config)  # an app running jobs in every container: refused
    s["build_files"] = build_files(s)
    decision = build_database.decide(s["build_database"], s["app"], s["build_on"])
    s["build_with_database"], s["build_database_why"] = decision.use, decision.why
    s["version_derived"] = not s["app_version"]
    s["app_version"] = images.version(app_path, s["app_version"], recipe=recipe_of(s))
    s["app_image"] = f"{s['app_name']}:{s['app_version']}"
    s.update(s["app"].context(s["app_name"], s["app_version"]))
    tasks.paths(s)
    values = envfile.read()
    # DATABASE_URL in .env: a managed Postgres, not a db service (envfile.read checked it already).
    s["database_external"] = ExternalDatabase.of(values) is not None
    if s["database_external"] and (s["role"] == "db" or s["database_host"] not in ("", "external")):
        raise settings.SettingsError("DATABASE_URL in .env names an external database, and a db server is listed: "
                                     "keep one (remove VPSKIT_DB_HOST, or DATABASE_URL to use the db server)")
    if s["database_host"] == "external" and not s["database_external"]:
        raise settings.SettingsError("database_host=external needs the database's URL: put DATABASE_URL="
                                     "postgresql://USER:PASSWORD@HOST:PORT/DATABASE in .env")
    s["backup_server"] = tasks.backup_server(s)  # takes the backups: where the database is, or the first app server
    s["env"] = envfile.server_env(values, s)
    s["env_header"] = envfile.header(values, s["env"])  # which variables are the operator's, which are secrets
    s["offsite"] = offsite.Offsite.of(s, values)
    s["url"] = s["public_url"] or _url(s, host.data.get("ssh_hostname") or host.name)
    s["bundled_proxy"] = proxy.bundled(s) and s["role"] != "db"  # a db server serves no HTTP
    # Rendered once: pushed by artifacts(), hashed by stack(), built from by images_on_server().
    s["rendered"] = {name: render(name, **s) for name in ("docker-compose.yml", "Dockerfile", ".env")}
    s["rendered"]["proxy-route.caddy"] = render("proxy-route.caddy", **s) if s["bundled_proxy"] else ""
    return s


def config_kept(s: dict) -> None:
    """Ends the run, nothing changed, when this machine's .env lacks a variable the server's configuration has
    from an operator's .env (a CI job's .env without the laptop's SMTP_PASSWORD or NOTIFY_URL): one line naming
    them and the fix (tasks.config_kept)."""
    tasks.config_kept(s, envfile.read(), app_env=True)


def database_password_kept(s: dict) -> None:
    """Ends the run, nothing changed, when POSTGRES_PASSWORD in .env is not the password the database on the
    server accepts: PostgreSQL applies it only when the database is created, so the new app could not log in.
    Rotating it is: the role's password changed in the database first, then this deploy (docs: TROUBLESHOOTING)."""
    from vpskit.dbpassword import password_matches
    from vpskit.facts import DatabaseRolePassword

    if s["role"] == "app" or s["database_external"]:
        return
    verifier = host.get_fact(DatabaseRolePassword, app_dir=s["app_dir"], **SUDO)
    if verifier and password_matches(verifier, s["postgres_user"], envfile.read()["POSTGRES_PASSWORD"]) is False:
        tasks.fail(f"POSTGRES_PASSWORD in {envfile.env_file_path()} is not the password of the database role "
                   f"{s['postgres_user']} on the server (PostgreSQL keeps the one the database was created with, so "
                   "the app could not log in): put the old one back, or rotate it as docs/TROUBLESHOOTING.md #41 "
                   "says (change it in the database first, then deploy)")


def database_major_kept(s: dict) -> None:
    """Ends the run, nothing changed, when `postgres_image` is another PostgreSQL major than the data of the
    database on the server: that server would refuse the data directory (vpskit.pgmajor)."""
    from vpskit import pgmajor
    from vpskit.facts import DatabaseMajors

    if s["role"] == "app" or s["database_external"]:
        return
    data, env_major = host.get_fact(DatabaseMajors, project=s["app_name"], ref=s["postgres_image"], **SUDO)
    image = pgmajor.image_major(s["postgres_image"], env_major)
    if line := pgmajor.refusal(data, image, s["postgres_image"]):
        tasks.fail(line)
    if data and not image:
        logger.warning(f"{host.print_prefix}{pgmajor.unknown(data, s['postgres_image'])}")


def memory_budget(s: dict) -> None:
    """Ends the run, nothing changed, when the memory limits of everything on the server (this app's two app
    containers during a release, its db, the proxy, the other apps' containers) cannot fit its memory and swap;
    warns when serving needs swap (memory.verdict)."""
    from vpskit import memory
    from vpskit.facts import ServerMemory

    server = host.get_fact(ServerMemory, **SUDO)
    if not server.ram_mb:  # no /proc/meminfo: nothing to check against
        return
    planned, _ = memory.swap_to_make(s["swap_size"], server)  # made by this deploy, before any container changes
    server = dataclasses.replace(server, swap_mb=server.swap_mb + planned)
    level, line = memory.verdict(memory.budget(s, server), server)
    if level == "refuse":
        tasks.fail(line)
    (logger.warning if level == "warn" else logger.info)(f"{host.print_prefix}{line}")


def build_files(s: dict) -> tuple[tuple[str, bytes], ...]:
    """What vpskit adds to the app's build context: the migration runner (and its route when vpskit applies the
    migrations), the jobs worker's route when vpskit's worker runs the app's jobs, and the shared cache handler.
    The same for every server of the app (the image and its version are). Sets s["jobs_by_worker"] and
    s["shared_cache"], which the templates read."""
    info = s["app"]
    s["jobs_by_worker"] = jobs.worker_wanted(info.jobs, s["jobs_worker"])
    # Next.js's cache with revalidations shared through the app's PostgreSQL (files/cache-handler.cjs), unless the
    # app brings its own handler: the build sets NEXT_CACHE_HANDLER_PATH to it (templates/Dockerfile).
    s["shared_cache"] = s["page_cache"] == "shared" and not info.own_cache_handler
    shared = ((CACHE_HANDLER, (ROOT / "files" / "cache-handler.cjs").read_bytes()),) if s["shared_cache"] else ()
    return (migrate_runner.build_files(info) + jobs.build_files(info.app_dir, info.config, s["jobs_by_worker"])
            + shared)


def recipe_of(s: dict) -> str:
    """The hash of how the image is built (Dockerfile, base image id), for the version; "" when an explicit
    version is given or the image is built on the server."""
    if s["app_version"] or s["build_on"] != "local":
        return ""
    # Rendered with the app's name and version left out: the same sources built the same way are the same
    # version under any app name (a staging copy), so it is built once.
    v, name = "@VERSION@", "@APP@"
    return images.recipe(render("Dockerfile", **{**s, **s["app"].context(name, v), "app_version": v,
                                                 "app_name": name}), s["node_image"], s["build_files"])


def _url(s: dict, server: str) -> str:
    if s["domain"]:
        return f"https://{s['domain']}"
    if not s["publish_port"]:
        return f"the {s['proxy_network']} network"
    if s["publish_host"] == "127.0.0.1":
        return f"http://127.0.0.1:{s['publish_port']} on the server (ssh -L {s['publish_port']}:127.0.0.1:" \
               f"{s['publish_port']} {server} to browse it)"
    return f"http://{server if s['publish_host'] == '0.0.0.0' else s['publish_host']}:{s['publish_port']}"  # noqa: S104


def plan() -> dict:
    """Validated settings plus what follows from them (version, image, paths, server env) for this host."""
    from vpskit.facts import DockerEngine

    keys = [d.key for d in settings.defaults()]
    found = host.get_fact(DockerEngine) or {}
    s = _plan(tuple((k, host.data.get(k)) for k in keys), tuple(sorted(found.items())))
    if s["role"] == "app":  # an inventory.py listing its servers by hand is checked here
        media.several_app_servers_check(len(host.inventory.get_group("app_servers", [])), s)
    # One jobs worker per app: on its only server, or the first app server (_plan is shared by the app servers).
    apps = [h.name for h in host.inventory.get_group("app_servers", [])]
    return {**s, "jobs_worker_here": s["jobs_by_worker"] and (s["role"] == "all" or not apps or apps[0] == host.name)}


def docker_engine(s: dict) -> None:
    """Docker Engine and the Compose v2 plugin from the distribution's packages, running and enabled; python3 for
    the server program."""
    distro = (host.get_fact(LinuxDistribution) or {}).get("name", "")
    if s["docker_source"] == "docker":
        packages = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"]
        _docker_apt_repo(distro)
    else:
        # Debian 13 splits the CLI out of docker.io; Ubuntu 24.04 ships it inside and names Compose v2 apart.
        packages = ["docker.io", "docker-compose-v2"] if distro == "Ubuntu" else [
            "docker.io", "docker-cli", "docker-compose"]
    packages.append("python3")  # the server program (vpskit/server) runs the releases
    installed = host.get_fact(DebPackages) or {}
    missing = [p for p in packages if p not in installed]
    apt.packages(name="Install Docker Engine and Compose v2", packages=packages, update=bool(missing),
                 no_recommends=True, **SUDO)
    systemd.service(name="Docker running and started at boot", service="docker", running=True, enabled=True, **SUDO)


def _docker_apt_repo(distro: str) -> None:
    base = "https://download.docker.com/linux/" + ("ubuntu" if distro == "Ubuntu" else "debian")
    files.download(name="Docker's apt key", src=f"{base}/gpg", dest="/etc/apt/keyrings/docker.asc", mode="644",
                   **SUDO)
    apt.repo(name="Docker's apt repository",
             src=f"deb [signed-by=/etc/apt/keyrings/docker.asc] {base} {host.get_fact(_Codename)} stable", **SUDO)


class _Codename(FactBase):
    def command(self):
        return ". /etc/os-release && echo $VERSION_CODENAME"

    def process(self, output):
        return output[0].strip()


def server_baseline(s: dict) -> None:
    """What a fresh server gets beside Docker, each part a setting and changed only where the server differs:
    a swap file (none on a server that is a container: its host's business), unattended security updates, a
    bounded journal, and SSH password login off once this very connection proved key login."""
    from pyinfra.operations import server

    from vpskit import baseline, memory
    from vpskit.facts import ServerMemory

    mem = host.get_fact(ServerMemory, **SUDO)
    size, why = memory.swap_to_make(s["swap_size"], mem)
    if size:
        server.shell(name=f"Swap: a {size} MB swap file at {memory.SWAP_PATH}, on at boot",
                     commands=[baseline.swap_command(size)], **SUDO)
    else:
        logger.info(f"{host.print_prefix}swap: none made ({why})")
    if (size or mem.swap_mb) and not mem.virtualised_as:
        swappiness = files.put(name=f"Swap: vm.swappiness {s['swappiness']}", dest=baseline.SWAPPINESS_CONF,
                               src=BytesIO(baseline.swappiness_conf(s["swappiness"]).encode()), mode="644", **SUDO)
        server.shell(name="Swap: swappiness applied", commands=[f"sysctl -q -p {baseline.SWAPPINESS_CONF}"],
                     _if=swappiness.did_change, **SUDO)
    journal = files.put(name=f"Journal: at most {s['journal_max_use']} on disk", dest=baseline.JOURNALD_CONF,
                        src=BytesIO(baseline.journald_conf(s["journal_max_use"]).encode()), mode="644", **SUDO)
    systemd.service(name="Journal: journald restarted", service="systemd-journald", restarted=True,
                    _if=journal.did_change, **SUDO)
    if s["unattended_upgrades"]:
        # A fresh server has no package lists yet: update them first (only when the package is missing).
        missing = "unattended-upgrades" not in (host.get_fact(DebPackages) or {})
        apt.packages(name="Security updates: unattended-upgrades", packages=["unattended-upgrades"],
                     update=missing, no_recommends=True, **SUDO)
        files.put(name="Security updates: daily", dest=baseline.AUTO_UPGRADES_CONF,
                  src=BytesIO(baseline.auto_upgrades_conf().encode()), mode="644", **SUDO)
        reboot = f"at {s['auto_reboot_time']} when an update needs one" if s["auto_reboot"] else "never by itself"
        files.put(name=f"Security updates: the server reboots {reboot}", dest=baseline.UNATTENDED_CONF,
                  src=BytesIO(baseline.unattended_conf(s["auto_reboot"], s["auto_reboot_time"]).encode()),
                  mode="644", **SUDO)
    if s["ssh_keys_only"]:
        _ssh_keys_only()


def _ssh_keys_only() -> None:
    """Password login off, only when sshd's own log says this connection logged in with a key: a server where
    that cannot be proven is left as it is, with one line saying why (never lock the operator out)."""
    from pyinfra.operations import server

    from vpskit import baseline
    from vpskit.facts import LoginMethod, SshLogin

    login = host.get_fact(SshLogin)
    method = host.get_fact(LoginMethod, **login, **SUDO) if login else ""
    if method != "publickey":
        how = f"it logged in with {method}" if method else "sshd's log does not say how it logged in"
        logger.warning(f"{host.print_prefix}SSH password login left as it is: this connection could not prove key "
                       f"login ({how if login else 'not an SSH connection'}); set ssh_keys_only = False "
                       "to silence this")
        return
    conf = files.put(name="SSH: keys only (password login off)", dest=baseline.SSHD_CONF,
                     src=BytesIO(baseline.sshd_conf().encode()), mode="644", **SUDO)
    server.shell(name="SSH: sshd reloaded", commands=[baseline.sshd_reload_command()], _if=conf.did_change, **SUDO)


def firewall(s: dict) -> None:
    """Optional ufw: SSH (the port in use), 80 and 443 only. Docker's published ports bypass ufw, which is
    why the app is published on 127.0.0.1 unless publish_host says otherwise."""
    if not s["firewall"]:
        return
    # A fresh server has no package lists yet: update them first, as for Docker (only when ufw is missing).
    missing = "ufw" not in (host.get_fact(DebPackages) or {})
    apt.packages(name="Install ufw", packages=["ufw"], update=missing, no_recommends=True, **SUDO)
    ufw(name="Firewall: SSH, HTTP and HTTPS only", **SUDO)


FIREWALL_WAIT = 60  # seconds a deploy waits for the db server's packet filter to load


def database_firewall(s: dict) -> None:
    """A db server lets only the app servers reach postgres (a packet filter in front of Docker's published
    port, loaded before Docker at boot and again when Docker restarts); the database password is still needed."""
    from pyinfra.facts.systemd import SystemdStatus
    from pyinfra.operations import server

    if s["role"] != "db":
        return
    clients = tuple(c.strip() for c in s["database_clients"].split(",") if c.strip())
    unit = f"vpskit-db-firewall-{s['app_name']}.service"
    text = commands.database_firewall_unit(s["app_name"], clients)
    active = host.get_fact(SystemdStatus, services=[unit], **SUDO).get(unit, False)
    changed = files.put(name="Database firewall unit (the app servers only)", src=BytesIO(text.encode()),
                        dest=f"/etc/systemd/system/{unit}", mode="644", **SUDO)
    systemd.daemon_reload(name="Reload systemd for the firewall unit", _if=changed.did_change, **SUDO)
    # Bounded: the unit retries a filter that fails to load for as long as it takes (Docker waits for it at
    # boot), so a bare `systemctl restart` would wait as long. Until it loads, the rules before stay in place.
    failed = (f"vpskit: the db server's packet filter ({unit}) did not load within {FIREWALL_WAIT}s: see "
              f"`journalctl -u {unit}` on the db server, fix the cause and deploy again")
    server.shell(name="Database firewall applied", commands=[
        f"timeout {FIREWALL_WAIT} systemctl restart {unit} || {{ echo {commands.q(failed)} >&2; exit 1; }}"],
        _if=lambda: changed.did_change() or not active, **SUDO)
    systemd.service(name="Database firewall at boot, before Docker", service=unit, running=None, enabled=True,
                    **SUDO)


def proxy_step(s: dict) -> None:
    """The server's one proxy (shared by every app there), running and publishing this app's ports: checked
    before anything else changes, so a port taken on the server stops the deploy with the site untouched."""
    if s["role"] == "db":
        return
    if not s["bundled_proxy"]:
        if s["app_name"] in host.get_fact(ProxyState, **SUDO)["ports"]:
            proxy_serving(name="Proxy: this app's ports given back", app=s["app_name"], ports=(),
                          image=s["proxy_image"], caddyfile=proxy.caddyfile(s), acme_ca_root=s["acme_ca_root"], **SUDO)
        return
    image_present(name=f"Proxy image {s['proxy_image']} on the server", ref=s["proxy_image"],
                  transport=s["image_transport"], shipping=shipping.Shipping.of(s), **SUDO)
    proxy_serving(name=f"Proxy serving {', '.join(proxy.app_ports(s))}", app=s["app_name"],
                  ports=proxy.app_ports(s), image=s["proxy_image"], caddyfile=proxy.caddyfile(s),
                  acme_ca_root=s["acme_ca_root"], **SUDO)


def artifacts(s: dict) -> None:
    """In one step: the rendered compose file, .env (mode 600, the deploy user's) and proxy route for the
    next release (in {app_dir}/next: a release copies them into place under the app's lock), the Dockerfile,
    the server-side scripts and the backup timer's units; only what differs is uploaded."""
    user = tasks.ssh_user()
    app = s["app_dir"]
    managed = [
        # The next release's files, as one set (two deploys at once leave one deploy's, never a mix); `origin`
        # says whose they are, so a deploy whose files another replaced meanwhile names it when it stops.
        ManagedFile(f"{app}/next/docker-compose.yml", s["rendered"]["docker-compose.yml"], together="next"),
        ManagedFile(f"{app}/next/.env", s["rendered"][".env"], "600", user, user, together="next"),
        ManagedFile(f"{app}/next/proxy-route.caddy", s["rendered"]["proxy-route.caddy"], together="next"),
        ManagedFile(f"{app}/next/origin", f"{s['app_version']}\t{tasks.who()}\n", together="next"),
        ManagedFile(f"{app}/Dockerfile", s["rendered"]["Dockerfile"]),
        *tasks.script_files(s),
        *tasks.maintenance_page(s),
        *s["offsite"].files(),
        *[ManagedFile(f"/etc/systemd/system/{name}", text) for name, text in timer_units(s).items()],
        *[ManagedFile(f"/etc/systemd/system/{name}", text) for name, text in worker_units(s).items()],
    ]
    return tasks.push(s, "App files, .env (mode 600), scripts and units", managed)  # offsite.env too (root, 600)


# What each timer runs (its failure alerts NOTIFY_URL), by kind: backup, drill, health; the randomised delay, and
# how long a run may take before systemd stops it: a hung backup must not hold the backups' lock (and with it
# every deploy's pre-update backup and every restore) for ever.
TIMERS = {
    "backup": ("backup_schedule", "Daily vpskit backup", tasks.backup_command, 600, "1h"),
    "drill": ("drill_schedule", "vpskit restore drill", tasks.drill_command, 600, "1h"),
    "health": ("health_schedule", "vpskit health check", tasks.health_command, 60, "5min"),
}


def runs_timer(s: dict, kind: str) -> bool:
    """Backups and drills run where the database is (or on the first app server, for an external database);
    the health check on every server (it checks what the server runs)."""
    return kind == "health" or s.get("backup_server", s["role"] != "app")


def timer_units(s: dict) -> dict[str, str]:
    """The systemd service and timer of each scheduled job whose schedule is set."""
    units = {}
    for kind, (key, what, command, delay, limit) in TIMERS.items():
        if not s[key] or not runs_timer(s, kind):
            continue
        unit = f"vpskit-{kind}-{s['app_name']}"
        units[f"{unit}.service"] = (f"[Unit]\nDescription={what} of {s['app_name']}\nAfter=docker.service\n\n"
                                    f"[Service]\nType=oneshot\nTimeoutStartSec={limit}\n"
                                    f"ExecStart={tasks.notified(s, kind, command(s))}\n")
        units[f"{unit}.timer"] = (f"[Unit]\nDescription={what} of {s['app_name']}\n\n[Timer]\n"
                                  f"OnCalendar={s[key]}\nPersistent=true\nRandomizedDelaySec={delay}\n\n"
                                  "[Install]\nWantedBy=timers.target\n")
    return units


def worker_units(s: dict) -> dict[str, str]:
    """The jobs worker's systemd service, on the server that runs it (vpskit/server/jobs.py). It stops only between
    two requests to the app: a job in flight gets as long as a request may take."""
    if not s.get("jobs_worker_here"):
        return {}
    unit = f"{jobs_server.unit(s['app_name'])}.service"
    command = f"{s['app_dir']}/bin/vpskit-server jobs run --app-dir {s['app_dir']} --interval {s['jobs_interval']}"
    return {unit: (f"[Unit]\nDescription=Payload jobs worker of {s['app_name']} (vpskit)\nAfter=docker.service\n\n"
                   f"[Service]\nExecStart={command}\nRestart=always\nRestartSec=5\n"
                   f"TimeoutStopSec={jobs_server.REQUEST_LIMIT}\n\n[Install]\nWantedBy=multi-user.target\n")}


def offsite_tools(s: dict) -> None:
    """restic (offsite copies), ssh (an sftp repository) and rclone (media in a bucket) from the distribution's
    packages, when the settings ask for them."""
    packages = s["offsite"].packages()
    if not packages:
        return
    missing = [p for p in packages if p not in (host.get_fact(DebPackages) or {})]
    apt.packages(name=f"Install {', '.join(packages)}", packages=packages, update=bool(missing),
                 no_recommends=True, **SUDO)


def images_on_server(s: dict) -> None:
    """The database image (pulled or shipped) and the app image (built here and shipped, or built there). The
    app image is also the one-shot migration runner, when the app has migrations it does not apply itself and
    some are pending: a db server, which runs no app, gets it for that alone."""
    if s["backup_server"]:  # the database, or the client that backs up an external one
        image_present(name=f"Image {s['postgres_image']} on the server", ref=s["postgres_image"],
                      transport=s["image_transport"], shipping=shipping.Shipping.of(s), **SUDO)
    pending = pending_migrations(s)
    if pending:
        logger.info(f"{host.print_prefix}{len(pending)} migration(s) to apply before traffic: {', '.join(pending)} "
                    f"(by the new version's own image, {s['migrate_image']})")
    if s["role"] == "db" and not pending:
        return
    ref = s["app_image"]
    what = "Image" if s["role"] != "db" else "Migration runner (the app image)"
    if s["build_on"] == "local":
        build = images.LocalBuild(ref, s["app_path_abs"], s["rendered"]["Dockerfile"], "", build_line(s),
                                  s["build_cache"], shareable=s["version_derived"], extra=s["build_files"],
                                  database=s["postgres_image"] if s["build_with_database"] else "")
        image_present(name=f"{what} {ref} built here and shipped", ref=ref, transport="ssh", build=build,
                      shipping=shipping.Shipping.of(s, app_image=True), **SUDO)
    else:
        server_build(name=f"{what} {ref} built on the server", s=s, ref=ref, **SUDO)


def build_line(s: dict) -> str:
    """What the build's first line says it builds with: the package manager, the Node, the database."""
    return f"{s['app'].package_manager}, {s['node_why']}, {s['build_database_why']}"


def pending_migrations(s: dict) -> list[str]:
    """The app's migrations not yet recorded in the server's database, when vpskit applies them (on several
    servers, the db server does, once per release: an app server has none to apply)."""
    if not s["migrate_image"] or s["role"] == "app":
        return []
    if "pending_migrations" not in s:  # read once per run: images_on_server() and stack() both need it
        applied = set(host.get_fact(AppliedMigrations, app_dir=s["app_dir"], **SUDO))
        s["pending_migrations"] = [m for m in s["migrations"] if m not in applied]
    return s["pending_migrations"]


@operation()
def server_build(s: dict, ref: str):
    """Build an image of the app on the server from the same filtered context (for servers with the memory)."""
    from vpskit.facts import DockerImageId

    if host.get_fact(DockerImageId, ref=ref):
        host.noop(f"image {ref} is on the server")
        return
    context = images.context_tar(s["app_path_abs"], s["rendered"]["Dockerfile"], s["build_files"])
    tmp = f"{s['app_dir']}/build-context.tar"
    yield from files.put._inner(src=BytesIO(context), dest=tmp, mode="600")
    yield " ".join(images.build_command(ref)) + f" < {tmp} && rm -f {tmp}"


def stack(s: dict) -> None:
    """A backup when a running app is about to change, then compose applied only where it differs, a wait
    until every service is healthy, and the previous release put back when the new one does not get ready."""
    if s["backup_before_update"] and s["backup_server"] and s["role"] != "db":
        backup_before_update(name="Backup before the update", app_dir=s["app_dir"], project=s["app_name"],
                             app_ref=s["app_image"], command=f"VPSKIT_OFFSITE_SOFT=1 {tasks.backup_command(s)}",
                             database_external=s["database_external"], **SUDO)
    pending = tuple(pending_migrations(s))
    release = commands.Release(
        app_dir=s["app_dir"], attempt=_attempt_id(), version=s["app_version"], files_hash=_files_hash(s),
        who=tasks.who(), timeout=s["health_timeout"], keep=s["keep_images"], drain=s["drain_timeout"],
        lock_wait=s["lock_timeout"])
    services = {"all": {"app": s["app_image"], "db": s["postgres_image"]}, "app": {"app": s["app_image"]},
                "db": {"db": s["postgres_image"]}}[s["role"]]
    if s["database_external"]:
        services.pop("db", None)
    if s["role"] == "db":
        # Before the app servers: migrations (for an app that leaves them to vpskit) are applied here, once,
        # and a failure here stops the rollout before it starts (recorded as rolling).
        stack_applied(name="Database server up and healthy", release=release, project=s["app_name"],
                      images_by_service=services, pending_migrations=pending, rolling=True,
                      url=f"{s['private_address']}:5432 (the app servers only)", **SUDO)
        return
    if s["role"] == "app":
        # One batch of app servers at a time, each with the same switch as one server; a failure stops the
        # rollout, and the servers already released go back (rolled_back), so all run one version.
        batch = {"_serial": True} if s["rollout_batch"] == 1 else {"_parallel": s["rollout_batch"]}
        stack_applied(name="Rolling release on the app servers", release=release, project=s["app_name"],
                      images_by_service=services, pending_migrations=pending, url=s["url"], rolling=True,
                      _if=rolling.may_start, **batch, **SUDO)
        name = host.name
        before = host.get_fact(ReleaseHistory, app_dir=s["app_dir"], **SUDO).current  # what serves before this run
        rolled_back(name="Rollout stopped: this server goes back to the release before", app_dir=s["app_dir"],
                    target=before, who=tasks.who(), timeout=s["health_timeout"], keep=s["keep_images"],
                    drain=s["drain_timeout"], lock_wait=s["lock_timeout"], _if=lambda: rolling.must_go_back(name),
                    **SUDO)
        return
    stack_applied(name="Stack up and healthy", release=release, project=s["app_name"],
                  images_by_service=services, pending_migrations=pending, url=s["url"], **SUDO)


def _files_hash(s: dict) -> str:
    r = s["rendered"]
    return history.files_hash(r["docker-compose.yml"], r[".env"], r["proxy-route.caddy"])


@cache
def _attempt_id() -> str:
    """One id per deploy run (shared by its hosts): the time and a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def timers(s: dict, pushed) -> None:
    """The backup, drill and health timers enabled (or disabled when their schedule is empty)."""
    systemd.daemon_reload(name="Reload systemd when the units changed", _if=pushed.did_change, **SUDO)
    for kind, (key, what, *_) in TIMERS.items():
        unit = f"vpskit-{kind}-{s['app_name']}.timer"
        if s[key] and runs_timer(s, kind):
            systemd.service(name=f"{what} timer enabled", service=unit, running=True, enabled=True, **SUDO)
        else:
            systemd.service(name=f"No {kind} timer", service=unit, running=False, enabled=False, **SUDO)


def jobs_worker(s: dict) -> None:
    """The jobs worker running where it runs, stopped and disabled elsewhere. A deploy that changes its program or
    unit never restarts it (that would wait for a job in flight): it ends between two rounds by itself, and
    systemd starts the new one (vpskit/server/jobs.py)."""
    unit = f"{jobs_server.unit(s['app_name'])}.service"
    if s.get("jobs_worker_here"):
        systemd.service(name="Jobs worker running (Payload's jobs queue)", service=unit, running=True, enabled=True,
                        **SUDO)
    else:
        systemd.service(name="No jobs worker", service=unit, running=False, enabled=False, **SUDO)


def log_plan(s: dict) -> None:
    logger.info(f"{host.print_prefix}deploying {s['app_image']} to {s['app_dir']}")

