"""vpskit operations in pyinfra's own test style: facts in, commands out."""

from __future__ import annotations

import pytest
from pyinfra.api import FunctionCommand
from pyinfra.context import ctx_host

from vpskit import commands, images, operations
from vpskit.facts import ComposeStack, DockerImageId, parse_compose_state


class FakeHost:
    """Answers get_fact from a table keyed by (fact, kwargs), global arguments such as _sudo included; a fact
    the table does not hold fails the test (a wrong key must not pass for a fresh server). Records noops."""

    print_prefix = "[fake] "

    def __init__(self, facts: dict):
        self.facts = facts
        self.noops: list[str] = []

    def get_fact(self, cls, **kwargs):
        key = (cls, tuple(sorted(kwargs.items())))
        if key not in self.facts:
            raise KeyError(f"the operation read a fact the test did not give: {key}")
        return self.facts[key]

    def noop(self, message: str) -> None:
        self.noops.append(message)


def run(op, facts: dict, **kwargs) -> tuple[list, FakeHost]:
    fake = FakeHost(facts)
    with ctx_host.use(fake):
        cmds = list(op._inner(**kwargs))
    return cmds, fake


def image_fact(ref: str, value: str):
    return {(DockerImageId, (("ref", ref),)): value}


def stack_fact(stack: dict, refs=("example:v1", "postgres:17")):
    return {(ComposeStack, (("app_dir", "/opt/example"), ("project", "example"), ("refs", refs))): stack}


HEALTHY = {
    "files": "f1", "applied": "f1", "images": {"example:v1": "sha256:app", "postgres:17": "sha256:pg"},
    "services": {
        "app": {"container": "c1", "image": "sha256:app", "state": "running", "health": "healthy"},
        "db": {"container": "c2", "image": "sha256:pg", "state": "running", "health": "healthy"},
    },
}
IMAGES = {**image_fact("example:v1", "sha256:app"), **image_fact("postgres:17", "sha256:pg")}
FRESH_STACK = ComposeStack().default()
RELEASE = commands.Release(app_dir="/opt/example", attempt="20261129T100000Z-abc123", version="v1",
                           files_hash="f1", who="ops on laptop", timeout=120, keep=3, drain=10, lock_wait=300)
START = ("/opt/example/bin/vpskit-server release start --app-dir /opt/example --attempt 20261129T100000Z-abc123 "
         "--version v1 --hash f1 --who 'ops on laptop' --timeout 120 --keep 3 --drain 10 --lock-wait 300")
STACK_ARGS = {"release": RELEASE, "project": "example",
              "images_by_service": {"app": "example:v1", "db": "postgres:17"}}


def with_service(service: str, **changes) -> dict:
    services = {**HEALTHY["services"], service: {**HEALTHY["services"][service], **changes}}
    return {**HEALTHY, "services": services}


def test_stack_as_desired_yields_nothing():
    cmds, fake = run(operations.stack_applied, {**stack_fact(HEALTHY), **IMAGES}, **STACK_ARGS)
    assert cmds == []
    assert "every service healthy and as configured" in fake.noops[0]


@pytest.mark.parametrize(
    "stack",
    [
        {**HEALTHY, "applied": "f0"},  # the files rendered here differ from those last released
        with_service("db", state="exited"),
        {**HEALTHY, "services": {"app": HEALTHY["services"]["app"]}},  # db container missing
        with_service("app", health="unhealthy"),  # running but failing its healthcheck
        with_service("app", health="starting"),
        {**HEALTHY, "files": "f7"},  # an attempt cut short left its files in place and recorded nothing
        with_service("app", count=2),  # and its container beside the serving one
    ],
)
def test_stack_that_differs_is_released_and_waited_for(stack):
    cmds, _ = run(operations.stack_applied, {**stack_fact(stack), **IMAGES}, **STACK_ARGS)
    assert cmds[0].args == (START,)
    assert isinstance(cmds[1], FunctionCommand)


def test_files_rendered_here_but_not_yet_released_count_as_a_change():
    from dataclasses import replace

    args = {**STACK_ARGS, "release": replace(RELEASE, files_hash="f9")}
    cmds, _ = run(operations.stack_applied, {**stack_fact(HEALTHY), **IMAGES}, **args)
    assert cmds and cmds[0].args[0].startswith("/opt/example/bin/vpskit-server release start --app-dir /opt/example")
    assert run(operations.stack_applied, {**stack_fact(HEALTHY), **IMAGES}, **STACK_ARGS)[0] == []


def test_the_last_release_attempt_is_reported():
    last = "2026-11-29T10:00:00Z\tv0\tab12\tCI run 7\trelease:failed\t31\tthe new container did not answer"
    cmds, _ = run(operations.stack_applied, {**stack_fact({**HEALTHY, "last": last}), **IMAGES}, **STACK_ARGS)
    assert cmds == []
    state = parse_compose_state(["files f1", "applied f1", "last " + last])
    assert state["last"] == last


def test_new_image_under_the_same_tag_recreates():
    facts = stack_fact({**HEALTHY, "images": {**HEALTHY["images"], "example:v1": "sha256:rebuilt"}})
    cmds, _ = run(operations.stack_applied, facts, **STACK_ARGS)
    assert len(cmds) == 2


def test_fresh_server_gets_the_whole_stack():
    cmds, _ = run(operations.stack_applied, stack_fact(FRESH_STACK), **STACK_ARGS)
    assert cmds[0].args[0] == START


BACKUP_ARGS = {"app_dir": "/opt/example", "project": "example", "app_ref": "example:v2",
               "command": "vpskit-server backup"}


def test_backup_before_an_update_of_a_running_app():
    facts = stack_fact({**HEALTHY, "images": {"example:v2": "sha256:v2"}}, refs=("example:v2",))
    cmds, _ = run(operations.backup_before_update, facts, **BACKUP_ARGS)
    assert [c.function for c in cmds] == [operations._run_visibly] and cmds[0].args == ("vpskit-server backup 2>&1",)


def test_no_backup_on_first_deploy_or_unchanged_image():
    assert run(operations.backup_before_update, stack_fact(FRESH_STACK, refs=("example:v2",)), **BACKUP_ARGS)[0] == []
    facts = stack_fact({**HEALTHY, "images": {"example:v2": "sha256:app"}}, refs=("example:v2",))
    assert run(operations.backup_before_update, facts, **BACKUP_ARGS)[0] == []


def test_registry_image_pulled_only_when_absent():
    cmds, _ = run(operations.image_present, image_fact("postgres:17", ""), ref="postgres:17", transport="registry")
    assert cmds == [commands.image_pull("postgres:17")]
    assert cmds[0].startswith("docker pull --quiet postgres:17 || ")
    cmds, fake = run(operations.image_present, image_fact("postgres:17", "sha256:pg"), ref="postgres:17",
                     transport="registry")
    assert cmds == [] and fake.noops


def test_shipped_image_skipped_when_the_server_has_the_same_id(monkeypatch):
    monkeypatch.setattr(images, "local_image_id", lambda ref: "sha256:pg")
    cmds, _ = run(operations.image_present, image_fact("postgres:17", "sha256:pg"), ref="postgres:17")
    assert cmds == []


def test_shipped_image_sent_when_the_server_differs(monkeypatch):
    monkeypatch.setattr(images, "local_image_id", lambda ref: "sha256:new")
    facts = {**image_fact("example:v1", "sha256:old"), **image_fact("sha256:new", "")}
    cmds, _ = run(operations.image_present, facts, ref="example:v1")
    assert [c.function.__name__ for c in cmds] == ["_ship"]


def test_image_the_server_has_under_another_name_is_only_tagged(monkeypatch):
    monkeypatch.setattr(images, "local_image_id", lambda ref: "sha256:same")
    facts = {**image_fact("staging:v1", ""), **image_fact("sha256:same", "sha256:same")}
    cmds, _ = run(operations.image_present, facts, ref="staging:v1")
    assert cmds == ["docker tag sha256:same staging:v1"]


def test_missing_local_image_is_built_then_shipped(monkeypatch):
    monkeypatch.setattr(images, "local_image_id", lambda ref: "")
    build = images.LocalBuild("example:v2", None, "FROM scratch")
    cmds, _ = run(operations.image_present, image_fact("example:v2", ""), ref="example:v2", build=build)
    assert [c.function.__name__ for c in cmds] == ["_build", "_ship"]


def test_compose_state_output_parsed():
    lines = ["files f1", "applied", "container app c0 sha256:old running healthy",
             "container app c1 sha256:app running healthy",
             "container db c2 sha256:pg exited none", "image postgres:17 sha256:pg", "image example:v9"]
    assert parse_compose_state(lines) == {
        "files": "f1", "applied": "", "images": {"postgres:17": "sha256:pg", "example:v9": ""}, "last": "",
        "services": {
            "app": {"container": "c1", "image": "sha256:app", "state": "running", "health": "healthy", "count": 2},
            "db": {"container": "c2", "image": "sha256:pg", "state": "exited", "health": "none", "count": 1},
        },
    }


def test_command_lines_quote_their_arguments():
    assert commands.compose("/opt/my app", "ps") == "cd '/opt/my app' && docker compose ps"
    assert commands.image_id("x:1") == "docker image inspect -f '{{.Id}}' x:1 2>/dev/null || true"
    assert "label=com.docker.compose.project=example" in commands.compose_state("/opt/example", "example")
    assert "echo image 'my img:1' $(docker image inspect" in commands.compose_state("/o", "p", ("my img:1",))


def test_the_stack_state_waits_for_dockers_verdict_on_a_container_still_starting():
    cmd = commands.compose_state("/opt/example", "example")
    wait = (f"for _ in $(seq {commands.STARTING_WAIT}); do [ -z \"$(docker ps -q --filter "
            "label=com.docker.compose.project=example --filter health=starting)\" ] && break; sleep 1; done; ")
    # Bounded, and read before the containers' states are listed.
    assert wait in cmd and cmd.index(wait) < cmd.index("docker inspect -f")
    assert 0 < commands.STARTING_WAIT <= 60


def files_in_place(files, states):
    from vpskit.facts import FileStates

    fake = FakeHost({(FileStates, (("paths", tuple(f.path for f in files)),)): states})
    with ctx_host.use(fake):
        return list(operations.files_in_place._inner(files=files, staging="/opt/example/.upload", user="deploy"))


def archived(upload) -> dict[str, str]:
    """The files in an upload of files_in_place: member name -> text (and each member's mode is 600)."""
    import tarfile

    with tarfile.open(fileobj=upload.src, mode="r") as tar:
        members = tar.getmembers()
        assert all(m.isfile() and m.mode == 0o600 for m in members), members
        return {m.name: tar.extractfile(m).read().decode() for m in members}


def test_files_in_place_uploads_only_what_differs():
    import hashlib

    from vpskit.operations import ManagedFile

    same = ManagedFile("/opt/example/a", "same\n")
    other = ManagedFile("/opt/example/.env", "SECRET=x\n", "600", "deploy", "deploy")
    new = ManagedFile("/opt/example/bin/new.py", "print()\n", "755")
    chmod_only = ManagedFile("/opt/example/bin/x.sh", "#!/bin/sh\n", "755")
    digest = {f.path: hashlib.sha256(f.content.encode()).hexdigest() for f in (same, other, chmod_only)}
    states = {same.path: {"sha256": digest[same.path], "mode": "644", "user": "root", "group": "root"},
              other.path: None, new.path: None,
              chmod_only.path: {"sha256": digest[chmod_only.path], "mode": "644", "user": "root", "group": "root"}}
    cmds = files_in_place([same, other, new, chmod_only], states)
    assert cmds[0] == commands.private_dir("/opt/example/.upload", "deploy")
    # The two files that differ travel in one archive, placed by one command.
    assert type(cmds[1]).__name__ == "FileUploadCommand"
    assert sorted(archived(cmds[1]).values()) == ["SECRET=x\n", "print()\n"]
    assert cmds[2].startswith(f"tar -xmf {cmds[1].dest} -C /opt/example/.upload --no-same-owner && rm -f ")
    assert "chown deploy:deploy" in cmds[2] and "chmod 600" in cmds[2] and cmds[2].endswith("/opt/example/bin/new.py")
    assert cmds[2].count("mv -f ") == 2
    assert cmds[3] == "chown root:root /opt/example/bin/x.sh && chmod 755 /opt/example/bin/x.sh"
    assert len(cmds) == 4
    assert files_in_place([same], {same.path: states[same.path]}) == []


def test_a_secret_is_never_readable_by_other_users_on_its_way():
    """By construction: the upload (SFTP as the SSH user, then sudo's copy) lands only in a folder of mode 700
    that is made first; it is unpacked there by root (mode 600), owner and mode are set there, before the rename
    to the final path. The content travels only in the upload's file object, never in a command line (which
    --debug would print)."""
    import shlex

    from vpskit.operations import ManagedFile

    secret = ManagedFile("/opt/example/.env", "PAYLOAD_SECRET=s3cr3t-value\n", "600", "deploy", "deploy")
    mkdir, upload, place = files_in_place([secret], {secret.path: None})
    assert "install -d -m 700 -o deploy /opt/example/.upload &&" in mkdir
    assert upload.dest.startswith("/opt/example/.upload/")
    assert upload.remote_temp_filename.startswith("/opt/example/.upload/")
    (member, text), = archived(upload).items()
    assert text == "PAYLOAD_SECRET=s3cr3t-value\n"
    part = f"/opt/example/.upload/{member}"
    steps = [shlex.split(step) for step in place.split(" && ")]
    assert steps[0][:2] == ["tar", "-xmf"] and steps[1] == ["rm", "-f", upload.dest]
    assert steps[2] == ["chown", "deploy:deploy", part] and steps[3] == ["chmod", "600", part]
    assert steps[-1] == ["mv", "-f", part, "/opt/example/.env"]
    assert all("s3cr3t-value" not in c for c in (mkdir, place))


def test_firewall_allows_ssh_before_enabling():
    from vpskit.facts import SshServerPort, UfwStatus

    # The port is read without sudo (sudo drops SSH_CONNECTION): the fact is keyed by _sudo=False.
    facts = {(UfwStatus, ()): {"installed": True, "active": False, "rules": set()},
             (SshServerPort, (("_sudo", False),)): 2222}
    cmds, _ = run(operations.firewall, facts)
    assert cmds == ["ufw allow 2222/tcp && ufw allow 80/tcp && ufw allow 443/tcp && ufw --force enable"]


def test_firewall_refuses_when_the_ssh_port_cannot_be_read():
    from pyinfra.api import OperationError

    from vpskit.facts import SshServerPort, UfwStatus

    facts = {(UfwStatus, ()): {"installed": True, "active": False, "rules": set()},
             (SshServerPort, (("_sudo", False),)): None}
    with pytest.raises(OperationError, match="cannot read the SSH port of this connection"):
        run(operations.firewall, facts)


def test_ssh_port_fact_reads_ssh_connection():
    from vpskit.facts import SshServerPort

    assert SshServerPort().process(["ssh 203.0.113.9 51234 198.51.100.7 2200"]) == 2200
    assert SshServerPort().process(["ssh"]) is None  # e.g. under sudo, which drops the variable


def test_firewall_as_desired_yields_nothing():
    from vpskit.facts import SshServerPort, UfwStatus

    facts = {(UfwStatus, ()): {"installed": True, "active": True, "rules": {"22/tcp", "80/tcp", "443/tcp"}},
             (SshServerPort, (("_sudo", False),)): 22}
    assert run(operations.firewall, facts)[0] == []


def test_release_command_lines_quote_what_they_carry():
    line = commands.release_rollback("/opt/my app", 4, "Ann O'Neil on laptop", 180, 3, 10, 300)
    assert line == ("'/opt/my app'/bin/vpskit-server release rollback --app-dir '/opt/my app' --to 4 "
                    "--who 'Ann O'\"'\"'Neil on laptop' --timeout 180 --keep 3 --drain 10 --lock-wait 300")
    from dataclasses import replace

    assert commands.release_start(replace(RELEASE, migrate=("20261129_000000_initial",))) == (
        START + " --migrate 20261129_000000_initial")


def proxy_fact(*lines: str):
    from vpskit import proxy
    from vpskit.facts import ProxyState

    return {(ProxyState, ()): proxy.parse_state(list(lines))}


def test_proxy_takes_over_the_port_of_an_install_from_before_the_proxy():
    from vpskit import proxy

    facts = proxy_fact("running false", "listen 127.0.0.1:3000", "held c0ffee example 127.0.0.1:3000->3000/tcp")
    cmds, _ = run(operations.proxy_serving, facts, app="example", ports=("127.0.0.1:3000:3000",), image="caddy:2",
                  caddyfile="{}")
    assert cmds[0] == "docker rm -f c0ffee"
    assert isinstance(cmds[1], FunctionCommand) and cmds[1].function is operations._proxy_up
    app, ports, *_, state = cmds[1].args
    assert (app, ports, state["running"]) == ("example", ("127.0.0.1:3000:3000",), False)
    assert proxy.DIR == "/opt/vpskit-proxy"


def test_proxy_state_reads_port_ranges_as_docker_shows_them():
    from vpskit import proxy

    state = proxy.parse_state(["held ab vpskit-proxy 0.0.0.0:80->80/tcp, 127.0.0.1:3000-3001->3000-3001/tcp"])
    assert state["held"] == [("ab", "vpskit-proxy", {80, 3000, 3001})]


def test_proxy_refuses_a_port_another_program_holds_and_changes_nothing():
    from pyinfra.api import OperationError

    facts = proxy_fact("running true", "listen 127.0.0.1:3000", "listen 0.0.0.0:3001",
                       "ports example 127.0.0.1:3000:3000", "held beef other 0.0.0.0:3001->80/tcp")
    with pytest.raises(OperationError, match="port 3001 is already in use on the server by another program"):
        run(operations.proxy_serving, facts, app="example", ports=("127.0.0.1:3001:3001",), image="caddy:2",
            caddyfile="{}")


def test_a_release_set_goes_in_place_whole_in_one_locked_command():
    """Two deploys at once must leave one deploy's whole set of release files, never a mix that matches neither:
    one file of the set differing uploads all of it, moved in one command under a lock."""
    import hashlib

    from vpskit.operations import ManagedFile

    compose = ManagedFile("/opt/example/next/docker-compose.yml", "image: example:v2\n", together="next")
    env = ManagedFile("/opt/example/next/.env", "A=1\n", "600", "deploy", "deploy", together="next")
    script = ManagedFile("/opt/example/bin/x.sh", "#!/bin/sh\n", "755")
    same = {f.path: {"sha256": hashlib.sha256(f.content.encode()).hexdigest(), "mode": f.mode, "user": f.user,
                     "group": f.group} for f in (compose, env, script)}
    assert files_in_place([compose, env, script], same) == []
    cmds = files_in_place([compose, env, script], {**same, compose.path: None})  # only the compose file differs
    uploads = [c for c in cmds if type(c).__name__ == "FileUploadCommand"]
    assert len(uploads) == 1 and sorted(archived(uploads[0]).values()) == ["A=1\n", "image: example:v2\n"]  # whole
    last = cmds[-1]
    assert last.startswith("( flock -w 120 9 && mv -f ") and last.endswith(") 9>/opt/example/next/.next.lock")
    assert last.count("mv -f") == 2 and "/opt/example/next/.env" in last
    assert not any("mv -f" in c for c in cmds[:-1] if isinstance(c, str))


def test_unpacked_uploads_are_dated_now_so_another_deploys_cleanup_leaves_them(tmp_path):
    """Two deploys at once share the upload folder, and each run's private_dir removes what is older than an hour
    there; the archive's members are dated 1970, so unpacked without -m they went at once under the other
    deploy's release set, moved into place by a later command (seen: `mv: cannot stat ...new`)."""
    import subprocess
    import time

    from vpskit.operations import _tar

    (tmp_path / "a.tar").write_bytes(_tar({"run-0.new": "x"}))
    subprocess.run(["tar", "-xmf", str(tmp_path / "a.tar"), "-C", str(tmp_path), "--no-same-owner"], check=True)
    assert time.time() - (tmp_path / "run-0.new").stat().st_mtime < 60
    cleanup = commands.private_dir(str(tmp_path), "root").split(" && ")[-1]
    subprocess.run(["sh", "-c", cleanup], check=True)
    assert (tmp_path / "run-0.new").exists()


def test_a_failed_report_says_its_last_line_once_prefixed():
    from vpskit.operations import failure_line

    assert failure_line("vpskit upgrade", ["x", "vpskit upgrade: the dump failed"]) == "vpskit upgrade: the dump failed"
    assert failure_line("vpskit logs", ["no such service"]) == "vpskit logs: no such service"
    assert failure_line("vpskit health", []) == "vpskit health: no output"
