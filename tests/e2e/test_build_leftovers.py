"""The deploying machine after builds: the legacy builder keeps every stage of every build as an unnamed
image (a Payload app's build stage is 1.5 GB, its yarn install stage 4 GB), and a failed step leaves a
stopped container. vpskit's build keeps the stage images of the latest two builds only (the next build's cache)
and leaves no container behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from vpskit import images

pytestmark = pytest.mark.e2e


def stage_images(app: str) -> list[str]:
    out = subprocess.run(["docker", "image", "ls", "-q", "--filter", "dangling=true", "--filter",
                          f"label=vpskit.stage-of={app}"], capture_output=True, text=True, timeout=60)
    return sorted(set(out.stdout.split()))


def containers(app: str) -> set[str]:
    """Containers made from this app's stage images (a failed step's container carries the stage label)."""
    return set(subprocess.run(["docker", "ps", "-aq", "--filter", f"label=vpskit.stage-of={app}"],
                              capture_output=True, text=True, timeout=60).stdout.split())


def dockerfile(app: str, session: str, change: str, fail: bool = False) -> str:
    """The kit's stage layout (base; deps from base; migrate and build from deps; runtime copying from build),
    small enough to build in seconds. migrate and build are the leaves the legacy builder leaves behind as
    unnamed images."""
    return (f'FROM debian:trixie-slim AS base\nLABEL vpskit.stage-of="{app}" vpskit.testbed.session="{session}"\n'
            f"RUN echo {change} > /base.txt\n\n"
            f"FROM base AS deps\nRUN {'false' if fail else 'true'} && echo deps-{change} > /deps.txt\n\n"
            f"FROM deps AS migrate\nRUN echo migrate-{change} > /migrate.txt\n\n"
            f"FROM deps AS build\nRUN echo build-{change} > /build.txt\n\n"
            f'FROM debian:trixie-slim AS runtime\nLABEL vpskit.testbed.session="{session}"\n'
            "COPY --from=build /build.txt /build.txt\n")


def test_builds_leave_one_build_of_stage_images_and_no_container(testbed, tmp_path):
    app = f"vpskit-stages-{os.getpid()}"
    counts = []
    try:
        for n in range(4):
            images.LocalBuild(f"{app}:v{n}", tmp_path, dockerfile(app, testbed, f"change-{n}")).run()
            counts.append(len(stage_images(app)))
        with pytest.raises(RuntimeError, match="failed"):
            images.LocalBuild(f"{app}:broken", tmp_path, dockerfile(app, testbed, "change-x", fail=True)).run()
        after_failure = len(stage_images(app))
        assert not containers(app), "a failed build step left a container"
    finally:
        for ref in [f"{app}:v{n}" for n in range(4)]:
            subprocess.run(["docker", "image", "rm", ref], capture_output=True, timeout=120)
        for image in stage_images(app):
            subprocess.run(["docker", "image", "rm", image], capture_output=True, timeout=120)
    # Each build leaves its own two leaf stages (migrate, build); the previous build's stay as a cache, older
    # ones go: the count stops growing at two builds' worth (without the pruning: 2, 4, 6, 8).
    assert counts == [2, 4, 4, 4], counts
    assert after_failure <= images.STAGE_IMAGES_KEPT, after_failure
    print(f"\nstage images after 4 changed builds: {counts}; after a failed one: {after_failure}")
