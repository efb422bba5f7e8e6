"""The memory budget (vpskit/memory.py): what the server has, read as the fact prints it, against the limits of
everything vpskit runs there. The defaults fit a 1 GB server; limits that cannot fit are refused in one line."""

from __future__ import annotations

import subprocess

import pytest

from vpskit import memory, settings

GIB = 2**30
# A test-bed VPS sized 1g/1 CPU: the host's 24 GB in /proc/meminfo, the VPS's cgroup (v1) limits it to 1 GB with
# memory+swap 1 GB (no swap), under a root cgroup without a limit.
SIZED_V1 = ["mem 25276194816", "swap 0", "virt docker", "limit 1073741824", "swaplimit 1073741824",
            "limit 9223372036854771712", "swaplimit 9223372036854771712"]
# A 1 GB VM (cgroup v2, no limit above the session), with the 1 GB swap file vpskit made and the proxy running.
VM_V2 = ["mem 1007681536", "swap 1073737728", "virt none", "limit max", "swapv2 max", "limit max",
         "container vpskit-proxy 67108864", "container example 469762048", "container example 268435456"]


def defaults(**over) -> dict:
    s = settings.load({})
    s.update({"bundled_proxy": True, "database_external": False, **over})
    return s


def test_the_server_is_what_its_cgroups_allow_not_what_proc_meminfo_says():
    sized = memory.Server.parse(SIZED_V1)
    assert (sized.ram_mb, sized.swap_mb, sized.virtualised_as) == (1024, 0, "docker")
    vm = memory.Server.parse(VM_V2)
    assert (vm.ram_mb, vm.swap_mb, vm.virtualised_as) == (961, 1023, "")
    assert vm.containers == (("example", 256), ("example", 448), ("vpskit-proxy", 64))


def test_the_fact_reads_this_machine_as_proc_meminfo_and_its_cgroups_say():
    out = subprocess.run(["bash", "-c", memory.fact_command()], capture_output=True, text=True, timeout=30)
    server = memory.Server.parse(out.stdout.splitlines())
    total = int(open("/proc/meminfo").read().split()[1]) // 1024
    assert 0 < server.ram_mb <= total, out.stdout


def test_the_defaults_fit_a_1_gb_server_while_serving_and_with_its_swap_through_a_release():
    vm = memory.Server(ram_mb=961, swap_mb=1023)
    b = memory.budget(defaults(), vm)
    assert b.steady <= 961 < b.release <= 961 + 1023
    level, line = memory.verdict(b, vm)
    assert level == "ok", line
    assert line == f"memory: {b.steady} MB of limits while serving, {b.release} MB during a release; the server " \
                   "has 961 MB of memory and 1023 MB of swap"


def test_a_release_that_could_pass_memory_and_swap_is_warned_not_refused():
    level, line = memory.verdict(memory.budget(defaults(), memory.Server(961, 0)), memory.Server(961, 0))
    assert level == "warn"
    assert line.startswith("the memory limits need 1376 MB during a release (app 2 x 448, db 256, proxy 64, system "
                           "160), the server has 961 MB of memory and no swap: ")
    assert "give the server swap (swap_size) or lower app_memory_limit" in line


@pytest.mark.parametrize("swap", [0, 1023])
def test_limits_that_cannot_fit_are_refused_in_one_line_naming_the_settings(swap):
    server = memory.Server(1024, swap)
    level, line = memory.verdict(memory.budget(defaults(app_memory_limit="2g"), server), server)
    assert level == "refuse" and "\n" not in line
    have = f"and {swap} MB of swap" if swap else "and no swap"
    assert line == (f"the memory limits need 2528 MB while serving (app 2048, db 256, proxy 64, system 160), the "
                    f"server has 1024 MB of memory {have}: lower app_memory_limit or db_memory_limit, or give the "
                    "server swap (swap_size)")


def test_serving_that_needs_swap_is_warned():
    server = memory.Server(961, 2048)
    level, line = memory.verdict(memory.budget(defaults(app_memory_limit="1g"), server), server)
    assert level == "warn" and "it fits only with swap, which is slow" in line and "1504 MB while serving" in line


def test_every_other_container_on_the_server_counts_and_this_apps_own_are_replaced_by_its_limits():
    vm = memory.Server.parse(VM_V2 + ["container shop 536870912", "container shop 0"])
    b = memory.budget(defaults(), vm)
    # The running proxy counts once, as it runs; the other app with its limits (512 + one without a limit).
    assert (b.app, b.db, b.proxy, b.others, b.unlimited) == (448, 256, 64, 512, ("shop",))
    assert "shop run without a memory limit (not counted)" in memory.verdict(b, vm)[1]


def test_each_role_counts_what_it_runs():
    vm = memory.Server(961, 0)
    assert (memory.budget(defaults(role="db", bundled_proxy=False), vm).app,
            memory.budget(defaults(role="db", bundled_proxy=False), vm).db) == (0, 256)
    assert memory.budget(defaults(role="app"), vm).db == 0
    assert memory.budget(defaults(database_external=True), vm).db == 0


@pytest.mark.parametrize(("size", "server", "made", "why"), [
    ("auto", memory.Server(961, 0), 1024, ""),
    ("2g", memory.Server(961, 0), 2048, ""),
    ("auto", memory.Server(3900, 0), 0, "the server has 3900 MB of memory (swap_size = auto makes swap up to 2048 MB)"),
    ("auto", memory.Server(961, 511), 0, "the server has 511 MB of swap already"),
    ("auto", memory.Server(1024, 0, virtualised_as="docker"), 0,
     "the server is a container (docker): swap is its host's to give"),
    ("0", memory.Server(961, 0), 0, "swap_size is off"),
])
def test_swap_is_made_once_where_the_server_has_none_and_can_have_it(size, server, made, why):
    assert memory.swap_to_make(size, server) == (made, why)


def test_sizes_are_read_as_docker_reads_them():
    assert [memory.mb(v) for v in ("448m", "1g", "1.5g", "262144k", "1048577b")] == [448, 1024, 1536, 256, 2]
    with pytest.raises(ValueError):
        memory.mb("1 GB")
