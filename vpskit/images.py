"""The app image on the deploying machine: its version, its build context (filtered, secret-free), the
build, and shipping images to a server over the SSH connection pyinfra already holds (no registry)."""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import io
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vpskit import build_database
from vpskit.render import render
from vpskit.shipping import remember_use

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "files" / "entrypoint.sh"
CHUNK = 1 << 20


def ignore_patterns() -> list[str]:
    text = render(".dockerignore")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(rel, p) or any(fnmatch.fnmatch(part, p) for part in parts) for p in patterns)


def context_files(app_path: Path) -> list[Path]:
    """The app's files that enter the build context, sorted; .dockerignore rules applied here."""
    patterns = ignore_patterns()
    out = []
    for path in sorted(app_path.rglob("*")):
        rel = path.relative_to(app_path).as_posix()
        if path.is_file() and not path.is_symlink() and not _ignored(rel, patterns):
            out.append(path)
    return out


def content_hash(app_path: Path) -> str:
    digest = hashlib.sha256()
    for path in context_files(app_path):
        digest.update(path.relative_to(app_path).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def version(app_path: Path, explicit: str = "", recipe: str = "") -> str:
    """The image tag: the explicit version, else the git revision of the app (plus a content hash when it
    has uncommitted changes), else a content hash; then the recipe's hash (see recipe()). The same sources
    built the same way always give the same version, and anything that changes the image gives a new one."""
    if explicit:
        return explicit
    suffix = f"-{recipe[:6]}" if recipe else ""
    # The last commit that touched the app, so commits elsewhere in the repository make no new version.
    rev = subprocess.run(["git", "-C", str(app_path), "log", "-1", "--format=%h", "--abbrev=10", "--", "."],
                         capture_output=True, text=True)
    if rev.returncode != 0 or not rev.stdout.strip():
        return f"c{content_hash(app_path)}{suffix}"
    dirty = subprocess.run(["git", "-C", str(app_path), "status", "--porcelain", "--", "."],
                           capture_output=True, text=True).stdout.strip()
    base = f"{rev.stdout.strip()}-dirty-{content_hash(app_path)}" if dirty else rev.stdout.strip()
    return base + suffix


def recipe(dockerfile: str, base_image: str, extra: tuple[tuple[str, bytes], ...] = ()) -> str:
    """What goes into the image besides the app's sources: the rendered Dockerfile (with the version left
    out: it is rendered with a placeholder), the entrypoint, the files vpskit adds to the context (`extra`:
    steps.build_files), and the id of the base image this machine builds on, so a new node_image, or
    the same tag pulled again with a new id, makes a new version."""
    digest = hashlib.sha256(dockerfile.encode() + b"\0" + ENTRYPOINT.read_bytes() + b"\0")
    for name, data in extra:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    digest.update(base_image_id(base_image).encode())
    return digest.hexdigest()


def base_image_id(ref: str) -> str:
    """The base image's id on this machine, pulled first when it is missing (the build needs it anyway)."""
    found = local_image_id(ref)
    if not found:
        subprocess.run(["docker", "pull", "-q", ref], capture_output=True, text=True)
        found = local_image_id(ref)
    return found


def context_tar(app_path: Path, dockerfile: str, extra: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """The whole build context as a tar: the app's files (filtered), the rendered Dockerfile and
    .dockerignore, the entrypoint, and the files vpskit adds (`extra`, (path, content) pairs: the migration
    runner and its route; a file of the app at the same path is replaced). Deterministic (fixed mtimes and
    owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", dockerfile.encode())
        add(".dockerignore", render(".dockerignore").encode())
        add("vpskit-entrypoint.sh", ENTRYPOINT.read_bytes(), 0o755)
        added = {name for name, _ in extra}
        for path in context_files(app_path):
            if (rel := path.relative_to(app_path).as_posix()) not in added:
                add(rel, path.read_bytes(), 0o644)
        for name, data in extra:
            add(name, data, 0o644)
    return buf.getvalue()


def local_image_id(ref: str) -> str:
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


@dataclass
class LocalBuild:
    """Builds the app image on this machine from a context tar streamed to `docker build -`.

    + target: the Dockerfile stage to build ("" = the runtime image)
    + package_manager: shown in the progress line (which lock file the build installs from)
    + extra: files vpskit adds to the context, (path, content) pairs (steps.build_files)
    """

    ref: str
    app_path: Path
    dockerfile: str
    target: str = ""
    package_manager: str = ""
    cache: str = ""  # a BuildKit cache (build_cache setting): the build runs with buildx, importing and exporting it
    shareable: bool = False  # the version names sources and recipe (not set by hand): an image of it under
    # another app name is this image (a staging copy), tagged rather than built again
    extra: tuple[tuple[str, bytes], ...] = ()
    database: str = ""  # a PostgreSQL image to run beside the build (build_database), "" = none

    def run(self) -> None:
        if not local_image_id(self.ref):
            self._tag_twin()
        if not local_image_id(self.ref):
            with build_lock():
                # Another deploy on this machine may have built it, or its twin, while this one waited.
                if not local_image_id(self.ref):
                    self._tag_twin()
                if not local_image_id(self.ref):
                    self._build()
        remember_use(self.ref)  # the versions used last are the ones this machine keeps

    def _tag_twin(self) -> None:
        if self.shareable and (twin := same_version_elsewhere(self.ref)):
            subprocess.run(["docker", "tag", twin, self.ref], capture_output=True)
            print(f"    {self.ref}: the same sources and recipe as {twin}, tagged rather than built", file=sys.stderr)

    def _build(self) -> None:
        t0 = time.monotonic()
        what = f" with {self.package_manager}" if self.package_manager else ""
        print(f"    building {self.ref} on this machine{what}:", file=sys.stderr)
        context = context_tar(self.app_path, self.dockerfile, self.extra)
        app = self.ref.rsplit(":", 1)[0]
        with (build_database.throwaway(self.database, app) if self.database else contextlib.nullcontext({})) as env:
            self._run(context, app, t0, env)

    def _run(self, context: bytes, app: str, t0: float, env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            build_command(self.ref, self.target, self.cache, bool(self.database)), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )
        assert proc.stdin is not None and proc.stdout is not None
        feeder = threading.Thread(target=_feed, args=(proc.stdin, context), daemon=True)
        feeder.start()
        lines = []
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if step := progress_line(line):
                print(f"      {step} ({time.monotonic() - t0:.0f}s)", file=sys.stderr)
        proc.wait()
        feeder.join(timeout=10)
        text = "\n".join(lines)
        if proc.returncode != 0:
            keep_stage_cache(app, stage_leaves(text))  # what did build (the installed dependencies) stays
            prune_stage_images(app)
            tail = "\n".join(lines[-40:])
            raise RuntimeError(f"building {self.ref} failed (docker build exit {proc.returncode}):\n{tail}")
        kept = keep_stage_cache(app, stage_leaves(text))
        pruned = prune_stage_images(app)
        tidy = f"; build cache kept as {', '.join(kept)}" if kept else ""
        tidy += f", {pruned} older build-stage images removed" if pruned else ""
        print(f"    built {self.ref} in {time.monotonic() - t0:.0f}s{tidy}", file=sys.stderr)


def same_version_elsewhere(ref: str) -> str:
    """Another name of this machine's image that vpskit built as this version (`example:v` for `staging:v`)."""
    version = ref.rsplit(":", 1)[1]
    out = subprocess.run(["docker", "image", "ls", "--filter", f"label=vpskit.version={version}", "--format",
                          "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout.split()
    # Images built FROM it inherit the label: only one whose own tag is the version is the build.
    return next((r for r in out if r.rsplit(":", 1)[-1] == version and not r.endswith("-migrate:" + version)), "")


def _feed(stdin, data: bytes) -> None:
    try:
        stdin.write(data)
    except OSError:
        pass  # the build ended early; its output says why
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


NEXT_PROGRESS = re.compile(r"^(✓ |▲ |Creating an optimized|Collecting page data|Generating static pages \(\d+/\d+\)$)")


def progress_line(line: str) -> str:
    """The lines of a build worth showing as it runs: each step (legacy builder) or stage step (BuildKit)."""
    text = line.strip()
    if text.startswith("Step ") and " : " in text:
        return text if len(text) <= 110 else text[:107] + "..."
    if NEXT_PROGRESS.match(text):  # Next.js's own milestones inside the long build step
        return "  " + text[:100]
    if text.startswith("#") and "[" in text and "]" in text and not text.split(" ", 1)[0][1:].isalpha():
        body = text.split(" ", 1)[1] if " " in text else text
        if body.startswith("["):
            return body if len(body) <= 110 else body[:107] + "..."
    return ""


LOCK = Path(tempfile.gettempdir()) / f"vpskit-build-{os.getuid()}.lock"


@contextlib.contextmanager
def build_lock(path: Path = LOCK):
    """One image build at a time on this machine: a Next.js build takes about 2.3 GB and every core, so two
    deploys (or two hosts of one deploy) building at once only slow each other down. Polls rather than blocks,
    so pyinfra's other connections keep running meanwhile; says so when it has to wait."""
    with open(path, "a") as handle:
        waited = 0.0
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waited == 0:
                    print(f"    waiting for another image build on this machine to end (lock {path})...",
                          file=sys.stderr)
                time.sleep(1)
                waited += 1
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_command(ref: str, target: str = "", cache: str = "", database: bool = False) -> list[str]:
    """`docker build` from a context on stdin. --force-rm: no stopped container is left by a failed step.
    With a cache (GitHub Actions: type=gha), BuildKit's buildx imports it and exports every stage to it
    (mode=max), so a code change on a fresh runner does not reinstall the dependencies. With a database
    (build_database.throwaway), the build shares this machine's network to reach it on 127.0.0.1, and gets its
    build arguments by name only: docker reads their values from its own environment, no process list shows
    them."""
    version = ref.rsplit(":", 1)[1]
    if cache:
        cmd = ["docker", "buildx", "build", "--load", "--progress", "plain", "--cache-from", cache,
               "--cache-to", f"{cache},mode=max", "--label", f"vpskit.version={version}", "-t", ref]
    else:
        cmd = ["docker", "build", "--force-rm", "--label", f"vpskit.version={version}", "-t", ref]
    if database:
        cmd += ["--network", "host", *(["--allow", "network.host"] if cache else [])]
        cmd += [a for name in build_database.BUILD_ARGS for a in ("--build-arg", name)]
    return [*cmd, *(["--target", target] if target else []), "-"]


def stage_leaves(output: str) -> dict[str, str]:
    """{stage name: the image id of its last step}, from the legacy builder's output ("Step 3/9 : FROM base AS
    deps" ... " ---> 3f9c2a1b4d5e"). Empty for BuildKit, which leaves no stage images behind."""
    leaves: dict[str, str] = {}
    stage = ""
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("Step ") and " : FROM " in text.upper():
            words = text.split()
            stage = words[-1] if len(words) > 2 and words[-2].upper() == "AS" else ""
        elif text.startswith("--->") and stage and not text.startswith("---> Running"):
            value = text.split("--->", 1)[1].strip()
            if value and " " not in value:
                leaves[stage] = value
    return leaves


CACHED_STAGES = ("deps",)  # the installed dependencies: the slow part a code change does not touch


def keep_stage_cache(app: str, leaves: dict[str, str]) -> list[str]:
    """Names the stages worth keeping as the next build's cache (`{app}-cache:deps`): a named image is not a
    leftover, and its parent layers (the base stage) stay with it. Returns the names given."""
    kept = []
    for stage in CACHED_STAGES:
        if stage in leaves:
            name = f"{app}-cache:{stage}"
            if subprocess.run(["docker", "tag", leaves[stage], name], capture_output=True).returncode == 0:
                kept.append(name)
    return kept


def prune_stage_images(app: str) -> int:
    """Removes this app's unnamed build-stage images (label vpskit.stage-of): the legacy builder keeps each
    stage of each build (a Payload app's build stage is 1.5 GB); what the next build needs is named by
    keep_stage_cache. Returns how many were removed."""
    listed = subprocess.run(["docker", "image", "ls", "-q", "--no-trunc", "--filter", "dangling=true", "--filter",
                             f"label=vpskit.stage-of={app}"], capture_output=True, text=True)
    removed = 0
    for image in sorted(set(listed.stdout.split())):
        removed += subprocess.run(["docker", "image", "rm", image], capture_output=True).returncode == 0
    return removed


def ship_over_ssh(host, ref: str) -> bool:
    """Streams `docker save ref | gzip` from this machine into `sudo docker load` on the server, over the
    host's existing SSH connection. Nothing is staged on either disk."""
    t0 = time.monotonic()
    transport = host.connector.client.get_transport()
    channel = transport.open_session()
    channel.exec_command("sudo -n docker load")
    save = subprocess.Popen(f"docker save {shlex.quote(ref)} | gzip -1", shell=True, stdout=subprocess.PIPE)  # noqa: S602
    sent = 0
    assert save.stdout is not None
    try:
        while chunk := save.stdout.read(CHUNK):
            channel.sendall(chunk)
            sent += len(chunk)
        channel.shutdown_write()
    except OSError:
        save.kill()  # the server side ended early; its stderr says why
    save.wait()
    out = channel.makefile("rb").read()
    err = channel.makefile_stderr("rb").read()
    status = channel.recv_exit_status()
    channel.close()
    if save.returncode not in (0, -9) or status != 0:
        reason = err.decode(errors="replace").strip() or f"exit status {status}"
        print(f"    shipping {ref} to the server failed: {reason}", file=sys.stderr)
        return False
    del out
    secs = time.monotonic() - t0
    print(f"    shipped {ref}: {sent / 1e6:.0f} MB compressed in {secs:.1f}s", file=sys.stderr)
    return True
