"""Shipping images from this machine to a server with no registry in between, sending only the layers the
server lacks (Kamal's way): a registry on this machine bound to 127.0.0.1, the image pushed there, and the
server pulling it back through a reverse forward of the SSH connection the deploy already holds. Nothing is
installed on the server; Docker accepts a plain-HTTP registry on 127.0.0.1.

Pure command builders and output parsers first (tested as strings), then the code that runs them.

    result = ship_layers(host, "example:3f9c2a1", registry)   # Shipment, or None when forwarding is refused
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CONTAINER = "vpskit-registry"
VOLUME = "vpskit-registry"
MANIFESTS = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
LOCK = Path(tempfile.gettempdir()) / f"vpskit-registry-{os.getuid()}.lock"
PUSH_LOCK = Path(tempfile.gettempdir()) / f"vpskit-registry-push-{os.getuid()}.lock"
USED = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vpskit" / "used"
PROGRESS_EVERY = 5.0  # seconds between progress lines of a long transfer


@dataclass(frozen=True)
class Shipping:
    """How images built (or held) on this machine reach a server, and what this machine keeps afterwards."""

    method: str = "layers"  # "layers": only those the server lacks; "stream": the whole image (save | load)
    image: str = "registry:2"  # the local registry's image
    port: int = 5055  # the local registry's port on 127.0.0.1
    keep: int = 0  # versions of the app kept here after a transfer (0: no tidying, for other images)

    @classmethod
    def of(cls, s: dict, app_image: bool = False) -> Shipping:
        return cls(s["ship_with"], s["registry_image"], s["registry_port"], s["keep_images"] if app_image else 0)


# --- Command lines and parsers (pure)

def registry_run_command(image: str, port: int) -> list[str]:
    """The local registry: reachable from this machine only, its blobs in a named volume kept between runs,
    deletes enabled so old versions can be tidied away."""
    return ["docker", "run", "-d", "--name", CONTAINER, "--restart", "unless-stopped",
            "-p", f"127.0.0.1:{port}:5000", "-v", f"{VOLUME}:/var/lib/registry",
            "-e", "REGISTRY_STORAGE_DELETE_ENABLED=true", "--label", "vpskit.registry=1", image]


def registry_ref(port: int, ref: str) -> str:
    """`example:3f9c2a1` as the local registry (or the server's forward of it) names it."""
    return f"127.0.0.1:{port}/{ref}"


def pull_command(remote: str, ref: str) -> str:
    """Run on the server: pull through the forward, keep the image under its own name, drop the registry name."""
    return f"docker pull {remote} && docker tag {remote} {ref} && docker image rm {remote} >/dev/null"


@dataclass(frozen=True)
class LayerCount:
    sent: int
    skipped: int


_LAYER = re.compile(r"^([0-9a-f]{12}): (.+)$")


def count_layers(output: str) -> LayerCount:
    """Layers a `docker pull` (or `docker push`) fetched vs. found already there, from its plain output."""
    state: dict[str, str] = {}
    for line in output.splitlines():
        m = _LAYER.match(line.strip())
        if m:
            state[m.group(1)] = m.group(2)
    skipped = sum(1 for s in state.values() if s in ("Already exists", "Layer already exists"))
    sent = sum(1 for s in state.values() if s in ("Pull complete", "Pushed") or s.startswith("Mounted from"))
    return LayerCount(sent=sent, skipped=skipped)


@dataclass(frozen=True)
class Shipment:
    """What one image's transfer to one server cost."""

    ref: str
    layers_sent: int
    layers_skipped: int
    wire_bytes: int  # bytes through the SSH forward, both ways
    seconds: float

    def line(self) -> str:
        return (f"shipped {self.ref}: {self.layers_sent} layer(s) sent, {self.layers_skipped} already on the "
                f"server, {self.wire_bytes / 1e6:.1f} MB over SSH in {self.seconds:.1f}s")


# --- The local registry

@contextlib.contextmanager
def _flock(path: Path, mode: int, wait: float = 3600):
    """A lock taken by polling: a blocking flock would stop every host of the same pyinfra run (they share one
    process, as gevent greenlets). Yields False when `wait` seconds were not enough."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.5)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def registry_lock(exclusive: bool, wait: float = 3600):
    """Shipping holds the lock shared; deleting from the registry holds it alone (a collection running while a
    push or a pull does could take blobs from under it)."""
    return _flock(LOCK, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, wait)


def _docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _wait_answering(port: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not _answers(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as resp:  # noqa: S310
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def ensure_registry(image: str, port: int) -> None:
    """The local registry running and answering (started, or created, when it is not). Raises RuntimeError
    with the fix when it cannot be."""
    state = _docker("inspect", "-f", "{{.State.Running}}", CONTAINER).stdout.strip()
    if state == "false":
        _docker("start", CONTAINER)
    elif state != "true":
        print(f"    starting the local image registry ({image} on 127.0.0.1:{port}, data in volume {VOLUME})",
              file=sys.stderr)
        made = subprocess.run(registry_run_command(image, port), capture_output=True, text=True, timeout=300)
        if made.returncode != 0 and "already in use" not in made.stderr:  # another deploy started it meanwhile
            reason = made.stderr.strip().splitlines()[-1] if made.stderr.strip() else f"exit {made.returncode}"
            raise RuntimeError(f"the local image registry did not start ({reason}): free 127.0.0.1:{port} or set "
                               "registry_port, or set ship_with = \"stream\"")
    if _wait_answering(port):
        return
    raise RuntimeError(f"the local image registry ({CONTAINER}) does not answer on 127.0.0.1:{port}: "
                       f"`docker logs {CONTAINER}` says why; or set ship_with = \"stream\"")


def push(ref: str, port: int) -> LayerCount:
    """`ref` into the local registry (only layers it lacks are compressed and stored). One push at a time on
    this machine, its registry name made and dropped under the same lock (another deploy pushing the same
    image would drop the name from under it): deploys to several servers, or of several apps, push the same
    layers, which the first compresses and stores and the next finds there."""
    local = registry_ref(port, ref)
    t0 = time.monotonic()
    with _flock(PUSH_LOCK, fcntl.LOCK_EX):
        _docker("tag", ref, local)
        try:
            out = _docker("push", local, timeout=3600)
        finally:
            _docker("image", "rm", local)  # only the registry name goes; the image stays as `ref`
    if out.returncode != 0:
        raise RuntimeError(f"pushing {ref} to the local registry failed: {out.stderr.strip()[-300:]}")
    count = count_layers(out.stdout)
    if count.sent:
        print(f"    stored {count.sent} new layer(s) of {ref} in the local registry in {time.monotonic() - t0:.0f}s",
              file=sys.stderr)
    return count


def from_local_registry(ref: str, port: int) -> bool:
    """`ref` back into this machine's image store from its registry (after a `docker image prune`): no
    rebuild, and the same layers, so the server is sent nothing it has."""
    if not _answers(port):
        return False
    local = registry_ref(port, ref)
    with _flock(PUSH_LOCK, fcntl.LOCK_EX):
        if _docker("pull", local, timeout=1800).returncode != 0:
            return False
        _docker("tag", local, ref)
        _docker("image", "rm", local)
    remember_use(ref)
    return True


# --- The transfer

class _Forward:
    """A reverse forward of the host's SSH connection to the local registry, counting the bytes it carries."""

    def __init__(self, transport, local_port: int):
        self.transport, self.local_port = transport, local_port
        self.bytes = 0
        self.remote_port = 0

    def open(self) -> None:
        # Port 0: the server picks a free one (several deploys, or hosts, may forward at once).
        self.remote_port = self.transport.request_port_forward("127.0.0.1", 0, handler=self._accept)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.cancel_port_forward("127.0.0.1", self.remote_port)

    def _accept(self, channel, origin, server) -> None:
        threading.Thread(target=self._serve, args=(channel,), daemon=True).start()

    def _serve(self, channel) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.local_port), timeout=30)
        except OSError:
            channel.close()
            return
        sock.settimeout(None)

        def pump(src_recv, dst_send):
            try:
                while data := src_recv(65536):
                    self.bytes += len(data)
                    dst_send(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                channel.close()

        up = threading.Thread(target=pump, args=(channel.recv, sock.sendall), daemon=True)
        up.start()
        pump(sock.recv, channel.sendall)
        up.join(timeout=5)
        sock.close()


class ForwardingRefused(Exception):
    """The server's sshd does not allow TCP forwarding (AllowTcpForwarding no)."""


def ship_layers(host, ref: str, registry_image: str, port: int) -> Shipment:
    """Pushes `ref` to the local registry and has the server pull it through the SSH connection: only the
    layers the server lacks cross the wire. Raises ForwardingRefused (nothing changed) or RuntimeError."""
    from paramiko import SSHException

    t0 = time.monotonic()
    transport = host.connector.client.get_transport()
    forward = _Forward(transport, port)
    try:
        forward.open()
    except SSHException as err:
        raise ForwardingRefused(str(err)) from None
    try:
        with registry_lock(exclusive=False):
            ensure_registry(registry_image, port)  # inside the lock: a tidy may have it stopped for a moment
            push(ref, port)
            remember_use(ref)
            output = _pull(transport, forward, ref)
    finally:
        forward.close()
    count = count_layers(output)
    return Shipment(ref, count.sent, count.skipped, forward.bytes, time.monotonic() - t0)


def _pull(transport, forward: _Forward, ref: str) -> str:
    remote = registry_ref(forward.remote_port, ref)
    channel = transport.open_session()
    channel.set_combine_stderr(True)
    channel.exec_command(f"sudo -n sh -c '{pull_command(remote, ref)}'")
    lines: list[str] = []
    done = threading.Event()

    def progress():
        last = 0
        while not done.wait(PROGRESS_EVERY):
            if forward.bytes != last:
                last = forward.bytes
                layers = count_layers("\n".join(lines))
                print(f"    ... {ref}: {last / 1e6:.1f} MB sent to the server so far, {layers.sent} layer(s) done, "
                      f"{layers.skipped} already there", file=sys.stderr)

    ticker = threading.Thread(target=progress, daemon=True)
    ticker.start()
    try:
        for raw in channel.makefile("r"):
            lines.append(raw.rstrip("\n"))
        status = channel.recv_exit_status()
    finally:
        done.set()
        channel.close()
    output = "\n".join(lines)
    if status != 0:
        tail = " ".join(ln for ln in lines[-3:] if ln.strip())
        raise RuntimeError(f"the server could not pull {ref} from this machine (exit {status}): {tail}")
    return output


# --- Tidying this machine

def remember_use(ref: str) -> None:
    """Records that vpskit used this version of the app now (the newest keep_images used stay)."""
    repo, tag = ref.rsplit(":", 1)
    USED.mkdir(parents=True, exist_ok=True)
    path = USED / f"{repo.replace('/', '_')}.json"
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        try:
            used = json.loads(handle.read() or "{}")
        except ValueError:
            used = {}
        used[tag] = time.time()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(used))


def last_used(repo: str) -> dict[str, float]:
    path = USED / f"{repo.replace('/', '_')}.json"
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def versions_to_drop(built: list[str], used: dict[str, float], keep: int, current: str) -> list[str]:
    """Of the versions vpskit built here, those beyond the newest `keep` by last use (the current one stays)."""
    ranked = sorted(built, key=lambda v: (v == current, used.get(v, 0.0)), reverse=True)
    return ranked[keep:]


def built_versions(repo: str) -> list[str]:
    """Tags of `repo` on this machine that vpskit built (their vpskit.version label is their tag)."""
    tags = sorted(set(_docker("image", "ls", repo, "--format", "{{.Tag}}").stdout.split()) - {"<none>"})
    if not tags:
        return []
    labels = _docker("image", "inspect", "-f", '{{index .Config.Labels "vpskit.version"}}',
                     *[f"{repo}:{t}" for t in tags]).stdout.splitlines()
    return [tag for tag, label in zip(tags, labels, strict=False) if tag == label.strip()]


def tidy(app: str, keep: int, current: str, port: int, image: str = "registry:2") -> list[str]:
    """This machine keeps the newest `keep` versions (by last use) of the app and of its migration runner that
    it built, in its image store and in the local registry, whose unreferenced blobs are then collected. The
    registry part waits for other deploys' transfers (up to 2 minutes, else it is left for next time).
    Returns the versions removed."""
    removed: list[str] = []
    repos = (app, f"{app}-migrate")
    for repo in repos:
        for version in versions_to_drop(built_versions(repo), last_used(repo), keep, current):
            if _docker("image", "rm", f"{repo}:{version}").returncode == 0:
                removed.append(f"{repo}:{version}")
    with registry_lock(exclusive=True, wait=120) as got:
        if got and _answers(port):
            deleted = sum(_tidy_registry(repo, keep, last_used(repo), current, port) for repo in repos)
            if deleted:
                collect_garbage(image, port)
    return removed


def collect_garbage(image: str, port: int) -> None:
    """The registry's unreferenced blobs removed, with the registry stopped (as its documentation requires:
    a running one keeps a cache of blobs that would then say "present" for blobs gone, and a manifest pushed
    again would be accepted and then not found). Called with the registry lock held alone."""
    _docker("stop", CONTAINER, timeout=120)
    try:
        _docker("run", "--rm", "-v", f"{VOLUME}:/var/lib/registry", "--entrypoint", "/bin/registry", image,
                "garbage-collect", "/etc/docker/registry/config.yml", timeout=600)
    finally:
        _docker("start", CONTAINER, timeout=120)
        _wait_answering(port)


def _request(method: str, url: str, accept: str = "") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, method=method, headers={"Accept": accept} if accept else {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - 127.0.0.1 only
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), b""
    except (OSError, urllib.error.URLError):
        return 0, {}, b""


def _digest(base: str, tag: str) -> str:
    status, headers, _ = _request("HEAD", f"{base}/manifests/{tag}", MANIFESTS)
    return {k.lower(): v for k, v in headers.items()}.get("docker-content-digest", "") if status == 200 else ""


def forget(repo: str, tag: str, port: int) -> bool:
    """Deletes `repo:tag` (its manifest) from the local registry; False when it was not there."""
    base = f"http://127.0.0.1:{port}/v2/{repo}"
    digest = _digest(base, tag)
    return bool(digest) and _request("DELETE", f"{base}/manifests/{digest}")[0] == 202


def _tidy_registry(repo: str, keep: int, used: dict[str, float], current: str, port: int) -> int:
    """Deletes the registry's manifests of versions beyond the newest `keep`; returns how many."""
    base = f"http://127.0.0.1:{port}/v2/{repo}"
    status, _, body = _request("GET", f"{base}/tags/list")
    if status != 200:
        return 0
    tags = json.loads(body or b"{}").get("tags") or []
    drop = set(versions_to_drop(tags, used, keep, current))
    digests = {tag: d for tag in tags if (d := _digest(base, tag))}
    kept = {digests.get(t) for t in tags if t not in drop}
    gone = {digests[t] for t in drop if t in digests} - kept  # a digest a kept tag shares stays
    return sum(_request("DELETE", f"{base}/manifests/{digest}")[0] == 202 for digest in gone)
