"""The deploying machine after builds: the legacy builder keeps every stage of every build as an unnamed
image (a Payload app's build stage is 1.5 GB, its yarn install stage 4 GB), and a failed step leaves a
stopped container. vpskit's build names the dependencies stage as the next build's cache (`APP-cache:deps`),
removes every other unnamed stage image, and leaves no container behind."""

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


def test_builds_leave_no_unnamed_stage_image_and_no_container(testbed, tmp_path):
    app = f"vpskit-stages-{os.getpid()}"
    counts, cached = [], []
    try:
        for n in range(4):
            images.LocalBuild(f"{app}:v{n}", tmp_path, dockerfile(app, testbed, f"change-{n}")).run()
            counts.append(len(stage_images(app)))
            cached.append(images.local_image_id(f"{app}-cache:deps"))
        # The cache is used: the same sources again reuse the named dependencies stage (same image id).
        images.LocalBuild(f"{app}:v3-again", tmp_path, dockerfile(app, testbed, "change-3")).run()
        assert images.local_image_id(f"{app}-cache:deps") == cached[-1]
        assert len(stage_images(app)) == 0
        with pytest.raises(RuntimeError, match="failed"):
            images.LocalBuild(f"{app}:broken", tmp_path, dockerfile(app, testbed, "change-x", fail=True)).run()
        after_failure = len(stage_images(app))
        assert not containers(app), "a failed build step left a container"
    finally:
        for ref in [f"{app}:v{n}" for n in range(4)] + [f"{app}:v3-again", f"{app}-cache:deps"]:
            subprocess.run(["docker", "image", "rm", ref], capture_output=True, timeout=120)
        for image in stage_images(app):
            subprocess.run(["docker", "image", "rm", image], capture_output=True, timeout=120)
    # Without the pruning the count grows by two leaves (migrate, build) per build: 2, 4, 6, 8.
    assert counts == [0, 0, 0, 0], counts
    assert after_failure == 0, after_failure
    assert all(cached) and len(set(cached)) == 4, cached  # each build's own dependencies stage, named
    print(f"\nunnamed stage images after 4 changed builds: {counts}; after a failed one: {after_failure}")
