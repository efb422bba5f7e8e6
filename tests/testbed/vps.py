"""Fresh "VPS" hosts for the test bed: Debian 13 containers with systemd as PID 1, OpenSSH on
127.0.0.1:<port>, a `deploy` user with passwordless sudo and a generated key, and no Docker.

Used by the pytest fixtures and, as a command, by the Makefile:

    python tests/testbed/vps.py start NAME [--port 2222] [--network NET] [--memory 1g --cpus 1]
                                                 # prints the SSH settings as KEY=value
    python tests/testbed/vps.py stop NAME        # removes the container, its volume and keys
    python tests/testbed/vps.py cleanup          # removes every test VPS but the demo's (and unused test networks)
    python tests/testbed/vps.py stale            # removes what test runs that no longer run left behind

A VPS started on a test network (`network(NAME, SESSION)`, then `start(..., network=NAME)`) reaches the other
containers on it by their container names (a backup box, an S3 server, a webhook receiver), and only them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".testbed" / "vps"
IMAGE = "vpskit-testbed/vps:trixie"
IMAGE_DOCKER = "vpskit-testbed/vps:trixie-docker"  # the same with Docker Engine and unattended-upgrades installed
LABEL = "vpskit.testbed"
BOOT_TIMEOUT = 60

# What a VPS needs to run its own systemd and Docker Engine here: --privileged is refused on these
# machines (CAP_SYS_RESOURCE is not in the bounding set), so every other capability is granted instead.
RUN_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
]  # fmt: skip


def docker(*args: str, input: str | None = None, check: bool = True, timeout: float = 300
           ) -> subprocess.CompletedProcess:
    """`docker ARGS`, bounded: a hung engine or stand-in fails the caller after `timeout` seconds."""
    return subprocess.run(["docker", *args], input=input, text=True, capture_output=True, check=check,
                          timeout=timeout)


def published_port(container: str, port: str) -> int:
    """The host port (on 127.0.0.1) Docker published `port` (e.g. "22/tcp") of `container` on."""
    return int(docker("port", container, port).stdout.strip().splitlines()[0].rsplit(":", 1)[1])


@dataclass
class VPS:
    name: str
    port: int
    key: Path
    known_hosts: Path
    host: str = "127.0.0.1"
    user: str = "deploy"
    ssh_port: int = 22  # the port sshd listens on inside the VPS (published on 127.0.0.1:port)
    network: str | None = None  # the test network it is on (its host name there: its container name)

    @property
    def volume(self) -> str:
        return f"{self.name}-docker"

    def ssh_args(self) -> list[str]:
        return [
            "ssh", "-p", str(self.port), "-i", str(self.key),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            f"{self.user}@{self.host}",
        ]  # fmt: skip

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs a shell command on the VPS over SSH as the deploy user."""
        return subprocess.run(
            [*self.ssh_args(), command], text=True, capture_output=True, check=check, timeout=timeout
        )

    def exec(self, *command: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Runs a command on the VPS as root through `docker exec` (for checks outside the SSH path)."""
        return docker("exec", *(["-i"] if input is not None else []), self.name, *command, check=check, input=input)

    def testinfra_host(self):
        import testinfra

        return testinfra.get_host(
            f"ssh://{self.user}@{self.host}:{self.port}",
            ssh_identity_file=str(self.key),
            ssh_extra_args=f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
            "-o IdentitiesOnly=yes -o BatchMode=yes",
        )

    def restart(self) -> None:
        """Restarts the VPS like a reboot: systemd boots again; the published SSH port may change."""
        docker("restart", "-t", "30", self.name)
        _wait(f"systemd in {self.name}", lambda: _system_state(self.name) in ("running", "degraded"), BOOT_TIMEOUT)
        self.port = published_port(self.name, f"{self.ssh_port}/tcp")
        host_key = self.known_hosts.read_text().split()[1:3]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_key)}\n")
        _wait(f"SSH login to {self.name}", lambda: self.ssh("true", check=False, timeout=10).returncode == 0,
              BOOT_TIMEOUT)

    def forward(self, remote_port: int, local_port: int) -> subprocess.Popen:
        """An SSH tunnel 127.0.0.1:local_port -> the VPS's 127.0.0.1:remote_port (stop it with .terminate())."""
        args = self.ssh_args()
        return subprocess.Popen([*args[:-1], "-N", "-o", "ExitOnForwardFailure=yes",
                                 "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}", args[-1]])

    def env(self) -> dict[str, str]:
        """The settings vpskit's inventory reads to reach this host."""
        return {
            "VPSKIT_HOST": self.host,
            "VPSKIT_SSH_PORT": str(self.port),
            "VPSKIT_SSH_USER": self.user,
            "VPSKIT_SSH_KEY": str(self.key),
            "VPSKIT_SSH_KNOWN_HOSTS": str(self.known_hosts),
        }


def _wait(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def network(name: str, session: str = "manual") -> str:
    """A user-defined Docker network for test-bed hosts to talk over by container name, labelled with the
    session (remove_session_leftovers removes it); returns `name`. Idempotent: an existing one is kept."""
    if docker("network", "inspect", name, check=False).returncode != 0:
        made = docker("network", "create", "--label", f"{LABEL}.session={session}", name, check=False)
        if made.returncode != 0 and docker("network", "inspect", name, check=False).returncode != 0:
            raise RuntimeError(f"docker network create {name}: {made.stderr.strip()}")
    return name


def remove_network(name: str) -> None:
    """Removes a test network (its containers first, or Docker refuses). No error if absent."""
    docker("network", "rm", name, check=False)


def sized(memory: str, cpus: str) -> list[str]:
    """docker run's flags for a VPS sized like a server: `memory` of RAM and no swap (memory+swap = memory), `cpus`
    CPUs. They bound what the VPS container runs itself; its Docker's containers are bound by cgroup_parent()."""
    return ["--memory", memory, "--memory-swap", memory, "--cpus", cpus]


def cgroup_parent(container_id: str) -> str:
    """The VPS Docker's daemon.json, written before Docker is installed: on these machines (cgroup v1, the host's
    cgroup namespace) a VPS's inner containers would land beside the VPS in /docker/<id>, outside its limit;
    nested under the VPS's own cgroup they share it, as the containers of a real 1 GB server share its RAM."""
    return f'{{"cgroup-parent": "/docker/{container_id}/vps-containers"}}\n'


def start(name: str, port: int | None = None, session: str = "manual", publish: tuple[str, ...] = (),
          ssh_port: int = 22, network: str | None = None, memory: str | None = None, cpus: str = "1",
          docker_ready: bool = False) -> VPS:
    """Starts a fresh VPS and returns once SSH answers as `deploy` with a verified host key; its sshd listens
    on `ssh_port` inside (like a server whose SSH was moved off 22). With `network` (see network()), the VPS
    is on that Docker network instead of the default bridge, reachable there as `name`. With `memory` (e.g.
    "1g"), the VPS and everything it runs share that much memory, no swap, and `cpus` CPUs. `docker_ready`:
    from a provider-like image with Docker Engine already installed and running (the first deploy skips apt)."""
    image = IMAGE_DOCKER if docker_ready else IMAGE
    if docker("image", "inspect", image, check=False).returncode != 0:
        raise RuntimeError(f"image {image} is missing: run `bash tests/testbed/setup.sh` (or `make testbed`)")
    remove(name)
    state = STATE / name
    state.mkdir(parents=True, exist_ok=True)
    key = state / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vpskit-testbed-{name}", "-f", str(key)],
        check=True,
    )
    docker("volume", "create", "--label", f"{LABEL}.session={session}", f"{name}-docker")
    publish_ssh = f"127.0.0.1:{port or ''}:{ssh_port}"
    docker(
        "run", "-d", "--name", name, "--hostname", name,
        "--label", f"{LABEL}=vps", "--label", f"{LABEL}.session={session}",
        *RUN_FLAGS, *(["--network", network] if network else []), *(sized(memory, cpus) if memory else []),
        "-v", f"{name}-docker:/var/lib/docker", "-p", publish_ssh,
        *[a for p in publish for a in ("-p", f"127.0.0.1:{p}")], image,
    )  # fmt: skip
    _wait(f"systemd in {name}", lambda: _system_state(name) in ("running", "degraded"), BOOT_TIMEOUT)
    if memory:
        full_id = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
        docker("exec", "-i", name, "sh", "-c", "mkdir -p /etc/docker && cat > /etc/docker/daemon.json",
               input=cgroup_parent(full_id))
        if docker_ready:  # its Engine started at boot, before it was told where its containers go
            docker("exec", name, "systemctl", "restart", "docker")
    docker(
        "exec", "-i", name, "sh", "-c",
        "cat > /home/deploy/.ssh/authorized_keys && chown deploy:deploy /home/deploy/.ssh/authorized_keys"
        " && chmod 600 /home/deploy/.ssh/authorized_keys",
        input=(state / "id_ed25519.pub").read_text(),
    )  # fmt: skip
    _wait(f"sshd in {name}", lambda: docker("exec", name, "test", "-s", "/etc/ssh/ssh_host_ed25519_key.pub",
                                             check=False).returncode == 0, BOOT_TIMEOUT)
    if ssh_port != 22:
        docker("exec", name, "sh", "-c", f"echo 'Port {ssh_port}' > /etc/ssh/sshd_config.d/port.conf "
               "&& systemctl restart ssh")
    host_key = docker("exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
    actual_port = published_port(name, f"{ssh_port}/tcp")
    known_hosts = state / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{actual_port} {host_key[0]} {host_key[1]}\n")
    vps = VPS(name=name, port=actual_port, key=key, known_hosts=known_hosts, ssh_port=ssh_port, network=network)
    _wait(f"SSH login to {name}", lambda: vps.ssh("true", check=False, timeout=10).returncode == 0, BOOT_TIMEOUT)
    return vps


def running(name: str) -> VPS | None:
    """The VPS `name` if it is up with its keys in place (so `make demo` can run again without a new VPS)."""
    state = STATE / name
    up = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip() == "true"
    if not (up and (state / "known_hosts").exists()):
        return None
    port = published_port(name, "22/tcp")
    vps = VPS(name=name, port=port, key=state / "id_ed25519", known_hosts=state / "known_hosts")
    return vps if vps.ssh("true", check=False, timeout=10).returncode == 0 else None


def _system_state(name: str) -> str:
    return docker("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()


CPU_LOG = ROOT / ".testbed" / "figures" / "vps-cpu.tsv"  # appended by remove(): where a test run's CPU went


def cpu_seconds(name: str) -> float | None:
    """CPU time a VPS container used so far, everything it ran included (its own Docker's containers are nested in
    its cgroup, see cgroup_parent); None where the machine has no cgroup v1 cpuacct for it."""
    full_id = docker("inspect", "-f", "{{.Id}}", name, check=False).stdout.strip()
    usage = Path(f"/sys/fs/cgroup/cpuacct/docker/{full_id}/cpuacct.usage")
    try:
        return int(usage.read_text()) / 1e9 if full_id else None
    except (OSError, ValueError):
        return None


def remove(name: str) -> None:
    """Removes a VPS container, the volume behind its /var/lib/docker and its keys. No error if absent. Its CPU
    time is appended to CPU_LOG first (name, seconds)."""
    used = cpu_seconds(name)
    if used is not None:
        CPU_LOG.parent.mkdir(parents=True, exist_ok=True)
        with CPU_LOG.open("a") as log:
            log.write(f"{name}\t{used:.1f}\n")
    docker("rm", "-f", "-v", name, check=False)
    docker("volume", "rm", "-f", f"{name}-docker", check=False)
    for f in (STATE / name).glob("*"):
        f.unlink()
    if (STATE / name).exists():
        (STATE / name).rmdir()


def existing(session: str | None = None) -> list[str]:
    flt = f"label={LABEL}.session={session}" if session else f"label={LABEL}=vps"
    out = docker("ps", "-a", "--filter", flt, "--format", "{{.Names}}").stdout
    return [n for n in out.split() if n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="start a fresh VPS (replacing one of the same name)")
    p_start.add_argument("name")
    p_start.add_argument("--port", type=int, help="SSH port on 127.0.0.1 (default: any free port)")
    p_start.add_argument("--session", default="manual")
    p_start.add_argument("--publish", action="append", default=[], metavar="HOSTPORT:PORT",
                         help="also publish a VPS port on 127.0.0.1 (repeatable)")
    p_start.add_argument("--network", help="a Docker network to put it on (created, labelled, if absent)")
    p_start.add_argument("--reuse", action="store_true", help="keep a VPS of that name that is already up")
    p_start.add_argument("--memory", help="size it like a server: this much memory for all it runs, e.g. 1g")
    p_start.add_argument("--cpus", default="1", help="its CPUs, with --memory (default 1)")
    p_stop = sub.add_parser("stop", help="remove a VPS with its volume and keys")
    p_stop.add_argument("name")
    sub.add_parser("cleanup", help="remove every test VPS except the demo")
    sub.add_parser("stale", help="remove what test runs that no longer run left (a machine restarted mid-run)")
    args = parser.parse_args(argv)
    if args.cmd == "start":
        t0 = time.monotonic()
        net = network(args.network, args.session) if args.network else None
        vps = (args.reuse and running(args.name)) or start(args.name, args.port, args.session, tuple(args.publish),
                                                           network=net, memory=args.memory, cpus=args.cpus)
        for k, v in vps.env().items():
            print(f"{k}={v}")
        print(f"# {args.name} ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    elif args.cmd == "stop":
        remove(args.name)
    elif args.cmd == "cleanup":
        label = f'{{{{ index .Config.Labels "{LABEL}.session" }}}}'
        for name in existing():
            if docker("inspect", "-f", label, name).stdout.strip() != "demo":
                remove(name)
        net_label = f'{{{{ index .Labels "{LABEL}.session" }}}}'
        nets = docker("network", "ls", "--filter", f"label={LABEL}.session", "--format", "{{.Name}}").stdout.split()
        for net in nets:
            if docker("network", "inspect", "-f", net_label, net).stdout.strip() != "demo":
                remove_network(net)
    elif args.cmd == "stale":
        remove_stale()
    return 0


def remove_stale() -> None:
    """Containers, volumes, networks and images of pytest sessions (label session=pytest-PID) whose process is
    gone: a run cut off by a restart cannot clean up after itself, and the next run's leftover check would
    count its remains as its own."""
    kinds = {"container": ("ps", "-aq"), "volume": ("volume", "ls", "-q"), "network": ("network", "ls", "-q"),
             "image": ("images", "-q")}
    for kind, listing in kinds.items():
        for ref in sorted(set(docker(*listing, "--filter", f"label={LABEL}.session").stdout.split())):
            fmt = "{{ index .Config.Labels \"%s.session\" }}" if kind in ("container", "image") else \
                "{{ index .Labels \"%s.session\" }}"
            session = docker(kind, "inspect", "-f", fmt % LABEL, ref, check=False).stdout.strip()
            pid = session.removeprefix("pytest-")
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                remove_cmd = {"container": ("rm", "-f", "-v"), "volume": ("volume", "rm", "-f"),
                              "network": ("network", "rm"), "image": ("rmi", "-f")}[kind]
                docker(*remove_cmd, ref, check=False)
                print(f"removed: {kind} {ref[:12]} of an earlier test run that ended without cleaning up ({session})")


if __name__ == "__main__":
    sys.exit(main())
