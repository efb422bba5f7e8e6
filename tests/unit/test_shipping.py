"""Shipping's command lines and parsers, as strings (the transfer itself is e2e: tests/e2e/test_ship.py)."""

from vpskit import images, shipping

PULL = """v3: Pulling from shipt
a1b2c3d4e5f6: Already exists
b1b2c3d4e5f6: Already exists
c1b2c3d4e5f6: Pulling fs layer
c1b2c3d4e5f6: Verifying Checksum
c1b2c3d4e5f6: Download complete
c1b2c3d4e5f6: Pull complete
Digest: sha256:0123
Status: Downloaded newer image for 127.0.0.1:41234/shipt:v3
"""


def test_layers_sent_and_skipped_come_from_the_pull_output():
    assert shipping.count_layers(PULL) == shipping.LayerCount(sent=1, skipped=2)
    assert shipping.count_layers("Status: Image is up to date for x") == shipping.LayerCount(0, 0)
    push = "d1b2c3d4e5f6: Pushed\ne1b2c3d4e5f6: Layer already exists\nf1b2c3d4e5f6: Mounted from shop\n"
    assert shipping.count_layers(push) == shipping.LayerCount(sent=2, skipped=1)


def test_the_registry_is_bound_to_loopback_with_its_data_in_a_volume():
    cmd = shipping.registry_run_command("registry:2", 5055)
    assert cmd[cmd.index("-p") + 1] == "127.0.0.1:5055:5000"
    assert cmd[cmd.index("-v") + 1] == "vpskit-registry:/var/lib/registry"
    assert cmd[-1] == "registry:2"


def test_the_server_keeps_the_image_under_its_own_name():
    remote = shipping.registry_ref(41234, "example:v3")
    assert remote == "127.0.0.1:41234/example:v3"
    assert shipping.pull_command(remote, "example:v3") == (
        "docker pull 127.0.0.1:41234/example:v3 && docker tag 127.0.0.1:41234/example:v3 example:v3 "
        "&& docker image rm 127.0.0.1:41234/example:v3 >/dev/null")


def test_the_newest_used_versions_stay_and_the_current_one_always():
    used = {"v1": 10.0, "v2": 30.0, "v3": 20.0, "v4": 5.0}
    assert sorted(shipping.versions_to_drop(["v1", "v2", "v3", "v4"], used, 2, "v4")) == ["v1", "v3"]
    assert shipping.versions_to_drop(["v1"], {}, 3, "v1") == []


def test_the_summary_line_says_layers_bytes_and_time():
    line = shipping.Shipment("example:v3", 2, 8, 3_812_000, 1.42).line()
    assert line == "shipped example:v3: 2 layer(s) sent, 8 already on the server, 3.8 MB over SSH in 1.4s"


BUILD = """Step 1/9 : FROM node:22 AS base
 ---> 1111aaaa2222
Step 2/9 : LABEL vpskit.stage-of="example"
 ---> Using cache
 ---> 3333bbbb4444
Step 3/9 : FROM base AS deps
 ---> 3333bbbb4444
Step 4/9 : RUN npm ci
 ---> Running in 9999ffff0000
 ---> 5555cccc6666
Step 5/9 : FROM deps AS build
 ---> 5555cccc6666
Step 6/9 : RUN npm run build
 ---> 7777dddd8888
Step 7/9 : FROM node:22 AS runtime
"""


def test_each_stage_leaf_is_read_from_the_legacy_builders_output():
    assert images.stage_leaves(BUILD) == {"base": "3333bbbb4444", "deps": "5555cccc6666", "build": "7777dddd8888"}
    assert images.stage_leaves("#5 [deps 2/4] RUN npm ci\n") == {}


def test_the_build_shows_its_steps_and_nextjs_milestones_only():
    shown = [images.progress_line(line) for line in
             ["Step 4/9 : RUN npm ci", " ---> Running in 9999", "added 812 packages", "✓ Compiled successfully",
              "#7 [build 3/3] RUN npm run build", "#7 12.3 some log"]]
    assert shown == ["Step 4/9 : RUN npm ci", "", "", "  ✓ Compiled successfully", "[build 3/3] RUN npm run build", ""]


def test_the_version_follows_the_recipe(tmp_path, monkeypatch):
    (tmp_path / "package.json").write_text("{}")
    monkeypatch.setattr(images, "base_image_id", lambda ref: {"node:a": "sha256:aaa", "node:b": "sha256:bbb"}[ref])
    one = images.version(tmp_path, recipe=images.recipe("FROM x", "node:a"))
    assert one == images.version(tmp_path, recipe=images.recipe("FROM x", "node:a"))
    assert one != images.version(tmp_path, recipe=images.recipe("FROM x", "node:b"))  # new base image id
    assert one != images.version(tmp_path, recipe=images.recipe("FROM y", "node:a"))  # another Dockerfile
    assert images.version(tmp_path, "v9", recipe=images.recipe("FROM x", "node:a")) == "v9"


def test_a_build_cache_builds_with_buildx_importing_and_exporting_every_stage():
    assert images.build_command("example:v3") == ["docker", "build", "--force-rm", "--label", "vpskit.version=v3",
                                                  "-t", "example:v3", "-"]
    cmd = images.build_command("example:v3", "migrate", "type=gha,scope=vpskit")
    assert cmd[:4] == ["docker", "buildx", "build", "--load"]
    assert cmd[cmd.index("--cache-from") + 1] == "type=gha,scope=vpskit"
    assert cmd[cmd.index("--cache-to") + 1] == "type=gha,scope=vpskit,mode=max"
    assert cmd[-3:] == ["--target", "migrate", "-"]


def test_a_twin_built_while_this_build_waited_for_the_lock_is_tagged_not_built_again(tmp_path, monkeypatch):
    """Two apps of the same sources and recipe (a staging copy, or two test modules) deployed at once: the second
    waits for the build lock while the first builds, then tags its image rather than building it again."""
    import contextlib

    have: dict[str, str] = {}
    twin_built = []
    calls = []

    @contextlib.contextmanager
    def lock():
        have["example:v1"] = "sha256:1"  # the other deploy's build ends while this one waits
        twin_built.append(True)
        yield

    def tag(args, **kw):
        calls.append(args)
        have[args[3]] = have[args[2]]

    monkeypatch.setattr(images, "local_image_id", lambda ref: have.get(ref, ""))
    monkeypatch.setattr(images, "same_version_elsewhere", lambda ref: "example:v1" if twin_built else "")
    monkeypatch.setattr(images, "build_lock", lock)
    monkeypatch.setattr(images.subprocess, "run", tag)
    monkeypatch.setattr(images, "remember_use", lambda ref: None)
    build = images.LocalBuild("staging:v1", tmp_path, "FROM scratch\n", shareable=True)
    monkeypatch.setattr(images.LocalBuild, "_build", lambda self: calls.append("built"))
    build.run()
    assert calls == [["docker", "tag", "example:v1", "staging:v1"]]
