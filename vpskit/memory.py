"""The memory budget of a server: the limits of everything vpskit runs there, against the memory it has.

Limits are what each container may take, not what it uses: a server whose limits add up to more than it has can
be pushed into the OOM killer by one busy moment. The rule, checked before a deploy changes anything:

- serving (system, every other container on the server, the db, the proxy, the app) must fit RAM + swap, or
  the deploy is refused; when it fits only with swap the deploy goes on, warned (swap is slow);
- during a release two app containers run for a few seconds (the old one serves until the new one is ready):
  when their sum could pass RAM + swap the deploy goes on, warned (limits are ceilings: the app takes about
  125 MB idle, far below its limit).

Pure functions; the fact is facts.ServerMemory, the step steps.memory_budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vpskit.server.proxy import CONTAINER

# What the server itself needs beside the containers' limits: kernel buffers outside MemTotal aside, systemd,
# journald, sshd, dockerd, containerd and one shim per container (measured on a 1 GB test VPS, idle: see
# bench/small_server.py), with room for a pyinfra session and apt.
SYSTEM_MB = 160
PROXY = CONTAINER  # the bundled proxy's container and compose project (vpskit/server/proxy.py)
PROXY_MB = 64  # the bundled proxy's limit (templates/proxy/docker-compose.yml is rendered with it)
_UNITS = {"b": 1 / 2**20, "k": 1 / 2**10, "m": 1, "g": 2**10}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([bkmg])$")


def mb(size: str) -> int:
    """Docker's memory size ("448m", "1g", "1.5g") in MB (MiB), rounded up.

    >>> mb("1g"), mb("448m"), mb("1.5g")
    (1024, 448, 1536)
    """
    m = _SIZE.match(size.strip().lower())
    if not m:
        raise ValueError(f"not a memory size: {size!r}")
    value = float(m[1]) * _UNITS[m[2]]
    return int(value) if value == int(value) else int(value) + 1


@dataclass(frozen=True)
class Server:
    """The memory a server has: RAM (the smaller of /proc/meminfo and any cgroup limit it runs under, as in a
    container-based VPS), swap it may use, and the memory limits of the containers running there, by compose
    project (0 MB: a container without a limit)."""

    ram_mb: int
    swap_mb: int
    containers: tuple[tuple[str, int], ...] = ()
    virtualised_as: str = ""  # "docker", "lxc", ... when the server is a container (it cannot have its own swap)

    @classmethod
    def parse(cls, lines: list[str]) -> Server:
        """From facts.ServerMemory's output: `mem BYTES`, `swap BYTES`, `limit BYTES|max` (one per cgroup
        level, v1 or v2), `swaplimit BYTES|max` (memory+swap in v1, swap alone in v2: `swapv2`), and
        `container PROJECT BYTES` per running container, `virt NAME|none` (systemd-detect-virt --container)."""
        mem = swap = 0
        limits: list[int] = []
        swap_limits: list[int] = []
        containers = []
        virt = ""
        for line in lines:
            parts = line.split()
            if len(parts) < 2:
                continue
            kind, value = parts[0], parts[-1]
            number = int(value) if value.isdigit() else None
            if kind == "mem" and number is not None:
                mem = number
            elif kind == "swap" and number is not None:
                swap = number
            elif kind == "limit" and number is not None:
                limits.append(number)
            elif kind == "swaplimit" and number is not None:  # v1: memory + swap together
                swap_limits.append(number)
            elif kind == "swapv2" and number is not None:
                swap_limits.append(-number)  # marked: swap alone
            elif kind == "virt" and value != "none":
                virt = value
            elif kind == "container" and len(parts) == 3 and number is not None:
                containers.append((parts[1] or "-", number // 2**20))
        ram = min([mem, *limits]) if mem else 0
        for limit in swap_limits:
            swap = min(swap, -limit if limit < 0 else max(limit - ram, 0))
        return cls(ram_mb=ram // 2**20, swap_mb=swap // 2**20, containers=tuple(sorted(containers)),
                   virtualised_as=virt)


@dataclass(frozen=True)
class Budget:
    """What this app's limits and everything else on the server add up to, in MB."""

    app: int
    db: int
    proxy: int
    others: int
    unlimited: tuple[str, ...]  # projects with a container that has no limit (not counted)

    @property
    def steady(self) -> int:
        return SYSTEM_MB + self.others + self.proxy + self.db + self.app

    @property
    def release(self) -> int:
        return self.steady + self.app  # the new app container beside the old one

    def parts(self, release: bool = True) -> str:
        others = f", other containers {self.others}" if self.others else ""
        app = f"app 2 x {self.app}" if release else f"app {self.app}"
        return f"{app}, db {self.db}, proxy {self.proxy}{others}, system {SYSTEM_MB}"


SWAP_PATH = "/swapfile"
SWAP_AUTO_MB = 1024  # swap_size = "auto": a 1 GB swap file on a server with at most AUTO_UP_TO_MB of memory
AUTO_UP_TO_MB = 2048


def swap_to_make(swap_size: str, server: Server) -> tuple[int, str]:
    """(MB, why): the size of the swap file vpskit makes at SWAP_PATH (0: none), and why not when it makes none.
    Only where there is no swap at all: a swap file is never resized or recreated while it is in use."""
    if swap_size in ("", "0"):
        return 0, "swap_size is off"
    if server.swap_mb:
        return 0, f"the server has {server.swap_mb} MB of swap already"
    if server.virtualised_as:
        return 0, f"the server is a container ({server.virtualised_as}): swap is its host's to give"
    if swap_size == "auto":
        if server.ram_mb > AUTO_UP_TO_MB:
            return 0, f"the server has {server.ram_mb} MB of memory (swap_size = auto makes swap up to " \
                      f"{AUTO_UP_TO_MB} MB)"
        return SWAP_AUTO_MB, ""
    return mb(swap_size), ""


def budget(s: dict, server: Server) -> Budget:
    """This app's limits (settings s) with every other container running on the server. The app's own
    containers (compose project = app_name) are replaced by its limits; the proxy counts once, as it runs or
    as this deploy will start it."""
    others = [(project, size) for project, size in server.containers if project not in (s["app_name"], PROXY)]
    running = [size for project, size in server.containers if project == PROXY]
    with_db = s["role"] != "app" and not s.get("database_external")
    return Budget(
        app=mb(s["app_memory_limit"]) if s["role"] != "db" else 0,
        db=mb(s["db_memory_limit"]) if with_db else 0,
        proxy=max(running) if running else (PROXY_MB if s.get("bundled_proxy") else 0),
        others=sum(size for _, size in others),
        unlimited=tuple(sorted({project for project, size in others if size == 0})),
    )


def verdict(b: Budget, server: Server) -> tuple[str, str]:
    """("refuse" | "warn" | "ok", one line). Refused when serving cannot fit RAM + swap; warned when serving
    needs swap, or when a release's two app containers could take more than RAM + swap for its seconds."""
    have = f"the server has {server.ram_mb} MB of memory" + (f" and {server.swap_mb} MB of swap" if server.swap_mb
                                                             else " and no swap")
    unlimited = f"; {', '.join(b.unlimited)} run without a memory limit (not counted)" if b.unlimited else ""
    total = server.ram_mb + server.swap_mb
    if b.steady > total:
        return "refuse", (f"the memory limits need {b.steady} MB while serving ({b.parts(release=False)}), {have}: "
                          f"lower app_memory_limit or db_memory_limit, or give the server swap (swap_size){unlimited}")
    if b.steady > server.ram_mb:
        return "warn", (f"the memory limits need {b.steady} MB while serving ({b.parts(release=False)}), more than "
                        f"the server's {server.ram_mb} MB of memory: it fits only with swap, which is slow; lower "
                        f"app_memory_limit or db_memory_limit{unlimited}")
    if b.release > total:
        return "warn", (f"the memory limits need {b.release} MB during a release ({b.parts()}), {have}: a busy "
                        "moment while two app containers run could meet the OOM killer; give the server swap "
                        f"(swap_size) or lower app_memory_limit{unlimited}")
    return "ok", (f"memory: {b.steady} MB of limits while serving, {b.release} MB during a release; {have}"
                  f"{unlimited}")


def fact_command() -> str:
    """Prints what Server.parse reads: /proc/meminfo's totals, the memory (and swap) limit of every cgroup from
    the one this shell runs in up to the root (cgroup v1 or v2), and each running container's limit."""
    return (
        "awk '/^MemTotal:/ {printf \"mem %.0f\\n\", $2 * 1024} /^SwapTotal:/ {printf \"swap %.0f\\n\", $2 * 1024}' "
        "/proc/meminfo; echo virt \"$(systemd-detect-virt --container 2>/dev/null || echo none)\"; "
        "p=$(awk -F: '$2 == \"memory\" {print $3; exit}' /proc/self/cgroup); v1=1; "
        "if [ -z \"$p\" ]; then p=$(awk -F: '$1 == \"0\" {print $3; exit}' /proc/self/cgroup); v1=; fi; "
        "while [ -n \"$p\" ]; do "
        "if [ -n \"$v1\" ]; then d=/sys/fs/cgroup/memory$p; "
        "[ -r \"$d/memory.limit_in_bytes\" ] && echo limit \"$(cat \"$d/memory.limit_in_bytes\")\"; "
        "[ -r \"$d/memory.memsw.limit_in_bytes\" ] && echo swaplimit \"$(cat \"$d/memory.memsw.limit_in_bytes\")\"; "
        "else d=/sys/fs/cgroup$p; "
        "[ -r \"$d/memory.max\" ] && echo limit \"$(cat \"$d/memory.max\")\"; "
        "[ -r \"$d/memory.swap.max\" ] && echo swapv2 \"$(cat \"$d/memory.swap.max\")\"; fi; "
        "[ \"$p\" = / ] && break; p=$(dirname \"$p\"); done; "
        "docker ps -q 2>/dev/null | xargs -r docker inspect --format "
        "'container {{with index .Config.Labels \"com.docker.compose.project\"}}{{.}}{{else}}-{{end}} "
        "{{.HostConfig.Memory}}' 2>/dev/null; true"
    )
