"""Small helpers the tests share: waiting with a deadline, HTTP to 127.0.0.1, stand-in containers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.testbed.vps import LABEL, STATE, VPS, docker, published_port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    """Polls `predicate` until it returns something truthy; fails the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the last error is reported on timeout
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict = field(default_factory=dict)

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None,
         timeout: float = 10) -> Response:
    """One HTTP request; answers with the status whatever it is (no exception for 4xx/5xx)."""
    assert url.startswith(("http://127.0.0.1:", "http://localhost:")), f"test traffic stays local: {url}"
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL checked above
            return Response(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as err:
        return Response(err.code, err.read(), dict(err.headers))


def jpeg(size: int, width: int = 6000, height: int = 4000) -> bytes:
    """A photo-sized JPEG of `size` bytes: its markers (JFIF, a baseline frame header with its dimensions, a scan)
    around noise that stands for the compressed image (no 0xFF byte in it, so no marker either)."""
    import os as _os

    soi, eoi = b"\xff\xd8", b"\xff\xd9"
    app0 = bytes.fromhex("ffe000104a46494600010100000100010000")
    sof0 = (bytes.fromhex("ffc0001108") + height.to_bytes(2, "big") + width.to_bytes(2, "big")
            + bytes.fromhex("03012200021101031101"))
    sos = bytes.fromhex("ffda000c03010002110311003f00")
    head = soi + app0 + sof0 + sos
    return head + _os.urandom(size - len(head) - len(eoi)).replace(b"\xff", b"\xfe") + eoi


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """Encodes a multipart/form-data body; returns (body, content type)."""
    boundary = "vpskit-test-boundary-7f3a"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, ctype) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class Postgres:
    """A container of the postgres:17 stand-in with its data on a named volume, published on 127.0.0.1."""

    name: str
    volume: str
    session: str
    user: str = "app"
    password: str = "s3cret-pw"
    db: str = "app"
    image: str = "postgres:17"
    port: int = 0  # host port on 127.0.0.1; 0 lets Docker choose (a fixed one survives `docker start`)

    def run(self) -> Postgres:
        docker("volume", "create", "--label", f"{LABEL}.session={self.session}", self.volume)
        docker(
            "run", "-d", "--name", self.name,
            "--label", f"{LABEL}=postgres", "--label", f"{LABEL}.session={self.session}",
            "-e", f"POSTGRES_USER={self.user}", "-e", f"POSTGRES_PASSWORD={self.password}",
            "-e", f"POSTGRES_DB={self.db}", "-v", f"{self.volume}:/var/lib/postgresql/data",
            "-p", f"127.0.0.1:{self.port or ''}:5432", self.image,
        )  # fmt: skip
        self.port = published_port(self.name, "5432/tcp")
        return self

    @property
    def url(self) -> str:
        from urllib.parse import quote

        return f"postgresql://{self.user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{self.db}"

    def connect(self):
        import psycopg

        return psycopg.connect(self.url, connect_timeout=3, autocommit=True)

    def ready(self) -> bool:
        ok = docker("exec", self.name, "pg_isready", "-h", "127.0.0.1", "-U", self.user, check=False)
        if ok.returncode != 0:
            return False
        with self.connect() as conn:
            return conn.execute("select 1").fetchone() == (1,)

    def wait_ready(self, timeout: float = 60) -> Postgres:
        wait_until(self.ready, timeout, f"postgres in {self.name} to accept connections")
        return self

    def logs(self) -> str:
        out = docker("logs", self.name, check=False)
        return out.stdout + out.stderr

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


@dataclass
class S3Server:
    """The S3-compatible server (vpskit-testbed/s3: moto) on a test network as `name`, for restic's s3 backend:
    `s3:{endpoint}/BUCKET[/PREFIX]`, path-style, no region needed, any access key and secret accepted (moto
    checks no signatures). A bucket name needs 3 characters or more. Buckets live in memory: gone with the
    container."""

    name: str
    network: str
    session: str
    image: str = "vpskit-testbed/s3"
    access_key: str = "vpskit-test-access"
    secret_key: str = "vpskit-test-secret"

    def run(self) -> S3Server:
        docker(
            "run", "-d", "--name", self.name, "--network", self.network,
            "--label", f"{LABEL}=s3", "--label", f"{LABEL}.session={self.session}", self.image,
        )  # fmt: skip
        return self

    @property
    def endpoint(self) -> str:
        return f"http://{self.name}:5000"

    def env(self) -> dict[str, str]:
        """The credentials restic (or any S3 client) reads from its environment."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def ready(self) -> bool:
        out = docker("exec", self.name, "curl", "-fsS", "-m", "5", "http://127.0.0.1:5000/", check=False, timeout=30)
        return out.returncode == 0 and "ListAllMyBucketsResult" in out.stdout

    def wait_ready(self, timeout: float = 60) -> S3Server:
        wait_until(self.ready, timeout, f"the S3 server in {self.name} to answer ListBuckets")
        return self

    def logs(self) -> str:
        out = docker("logs", self.name, check=False)
        return out.stdout + out.stderr

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False)


@dataclass
class Webhook:
    """A webhook receiver (tests/testbed/webhook.py) running inside a test VPS as the transient systemd service
    vpskit-webhook: every POST it gets is one record {"path": ..., "body": ..., "headers": ...} (body parsed
    from JSON when it is JSON, else text), answered 204. Other hosts on the VPS's test network reach it at
    url(vps.name)."""

    vps: VPS
    port: int = 8080
    file: str = "/var/lib/vpskit-webhook/messages.jsonl"

    UNIT = "vpskit-webhook"
    SOURCE = Path(__file__).resolve().parent / "testbed" / "webhook.py"

    @classmethod
    def start(cls, vps: VPS, port: int = 8080, timeout: float = 30) -> Webhook:
        hook = cls(vps, port)
        vps.exec("sh", "-c", "cat > /usr/local/bin/vpskit-webhook && chmod 755 /usr/local/bin/vpskit-webhook",
                 input=cls.SOURCE.read_text())
        vps.exec("sh", "-c", f"systemctl stop {cls.UNIT} 2>/dev/null; systemctl reset-failed {cls.UNIT} 2>/dev/null;"
                 f" mkdir -p {Path(hook.file).parent} && rm -f {hook.file}")
        vps.exec("systemd-run", "--unit", cls.UNIT, "/usr/bin/python3", "/usr/local/bin/vpskit-webhook",
                 str(port), hook.file)
        wait_until(hook.ready, timeout, f"the webhook receiver in {vps.name} to answer")
        return hook

    def ready(self) -> bool:
        return self.vps.exec("curl", "-fsS", "-m", "5", f"http://127.0.0.1:{self.port}/", check=False).returncode == 0

    def url(self, host_name: str) -> str:
        return f"http://{host_name}:{self.port}/hook"

    def messages(self) -> list[dict]:
        """Every POST received since the start or the last clear(), oldest first: {"path", "body", "headers"}."""
        out = self.vps.exec("cat", self.file, check=False)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def clear(self) -> None:
        self.vps.exec("sh", "-c", f": > {self.file}")

    def stop(self) -> None:
        self.vps.exec("systemctl", "stop", self.UNIT, check=False)


def storage_box(vps: VPS, user: str = "storage") -> tuple[Path, str]:
    """Makes `vps` a backup box like a rented storage box: a user `user` who logs in over SSH (and sftp) with
    its own generated ed25519 key only (no password login: the VPS's sshd has it off), and a folder that user
    owns for a restic repository. Returns (the private key's path on this machine, the folder's path on the
    box); the key sits in the VPS's state folder and goes with it (tests.testbed.vps.remove)."""
    key = STATE / vps.name / f"{user}_ed25519"
    for f in (key, key.with_name(key.name + ".pub")):
        f.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vpskit-testbed-{user}@{vps.name}",
                    "-f", str(key)], check=True, timeout=30)
    repo = f"/home/{user}/restic"
    vps.exec("sh", "-c", f"""set -e
id -u {user} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {user}
passwd -l {user} >/dev/null
install -d -m 700 -o {user} -g {user} /home/{user}/.ssh {repo}
cat > /home/{user}/.ssh/authorized_keys
chown {user}:{user} /home/{user}/.ssh/authorized_keys
chmod 600 /home/{user}/.ssh/authorized_keys""", input=key.with_name(key.name + ".pub").read_text())
    return key, repo


def remove_session_leftovers(session: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}.session={session}").stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
    vols = docker("volume", "ls", "-q", "--filter", f"label={LABEL}.session={session}").stdout.split()
    if vols:
        docker("volume", "rm", "-f", *vols, check=False)
    nets = docker("network", "ls", "-q", "--filter", f"label={LABEL}.session={session}").stdout.split()
    if nets:  # after the containers: Docker refuses to remove a network in use
        docker("network", "rm", *nets, check=False)


def run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, timeout=timeout, **kw)


ROOT = Path(__file__).resolve().parent.parent


def pyinfra_command(vps, env_file: Path, deploy_file: str, *extra: str, env: dict | None = None
                    ) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of pyinfra as an operator runs it against `vps` (images shipped over
    SSH, no registry here). `--dry` runs without -y, which would skip the change detection it is for."""
    outer = {k: v for k, v in os.environ.items() if k != "VPSKIT_GROUP"}  # the default group unless `env` says
    # unattended-upgrades is left out unless a test asks for it (test_small_server does): installing it on each
    # of the suite's VPS hosts would only repeat the same apt run.
    full_env = {**outer, **vps.env(), "VPSKIT_ENV_FILE": str(env_file), "VPSKIT_IMAGE_TRANSPORT": "ssh",
                "VPSKIT_UNATTENDED_UPGRADES": "false", **(env or {})}
    yes = [] if "--dry" in extra else ["-y"]
    return [str(ROOT / ".venv" / "bin" / "pyinfra"), *yes, "inventory.py", deploy_file, *extra], full_env


def run_pyinfra(vps, env_file: Path, deploy_file: str = "deploy.py", *extra: str, env: dict | None = None,
                timeout: float = 1500) -> subprocess.CompletedProcess:
    """pyinfra run to its end; stdout holds its whole output (stderr merged in)."""
    argv, full_env = pyinfra_command(vps, env_file, deploy_file, *extra, env=env)
    return subprocess.run(argv, cwd=ROOT, env=full_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)


def popen_pyinfra(vps, env_file: Path, deploy_file: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """pyinfra started in the background (for commands that run until stopped), output on .stdout."""
    argv, full_env = pyinfra_command(vps, env_file, deploy_file, *extra, env=env)
    return subprocess.Popen(argv, cwd=ROOT, env=full_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def app_build(app_path: Path, app_name: str):
    """The image build deploy.py makes for the app at `app_path` deployed as `app_name` with default settings:
    the same rendered Dockerfile, so the same image and tag (a deploy then finds it and ships it)."""
    from dataclasses import astuple

    from vpskit import app_check, build_database, images, node_version, settings
    from vpskit.render import render
    from vpskit.steps import build_files, build_line, recipe_of

    s = settings.load({"app_name": app_name, "app_path": str(app_path)})
    info = app_check.check(app_path)
    s["app"] = info
    node_version.settle(s)
    s["build_files"] = build_files(s)
    s["build_with_database"], s["build_database_why"] = astuple(build_database.decide(s["build_database"], info))
    version = images.version(app_path, recipe=recipe_of(s))
    s.update(app_image=f"{app_name}:{version}", app_version=version, **info.context(app_name, version))
    return images.LocalBuild(f"{app_name}:{version}", app_path, render("Dockerfile", **s), "", build_line(s),
                             extra=s["build_files"], database=s["postgres_image"] if s["build_with_database"] else "")


def app_version(app_path: Path, app_name: str) -> str:
    """The version deploy.py gives the app's image with default settings (sources, Dockerfile, base image)."""
    return app_build(app_path, app_name).ref.rsplit(":", 1)[1]


def build_once(app_path: Path, app_name: str) -> str:
    """Builds the app's image unless this machine has it. vpskit's build lock (one build at a time on a
    machine) makes parallel test workers share one build: the second finds the image once the lock is free."""
    build = app_build(app_path, app_name)
    build.run()
    return build.ref


class Traffic:
    """A probe (GET `path`, 25 requests/s; /api/health by default: any answer of the app, so that it counts
    requests lost to a release, not the test machine's database being slow under load) and a writer (POST
    /api/posts as a logged-in user, about 4/s, which needs the database every time) running against `base`
    until stopped, bounded by `limit` seconds. What a user of the site would notice:
    failed requests, failed writes, the longest time without a successful answer, and the posts whose
    creation was acknowledged (to check afterwards that each is still there)."""

    def __init__(self, base: str, token: str, path: str = "/api/health", limit: float = 900):
        import threading

        self.base, self.token, self.path, self.limit = base, token, path, limit
        self.requests = self.writes = self.failed_writes = 0
        self.get_errors: list[str] = []  # appended from several threads: list.append is atomic, += is not
        self.post_errors: list[str] = []
        self.acknowledged: list[int | str] = []
        self.versions: list[str] = []
        self.answers: list[float] = []
        self.failure_times: list[float] = []  # when each failed request or write was sent
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._probe, daemon=True),
                         threading.Thread(target=self._write, daemon=True)]

    def __enter__(self) -> Traffic:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        # The traffic's span is while requests were sent: the wait below for the last answers in flight (up
        # to their 5 s limit on a loaded machine) is not part of it, nor of its rate.
        self.ended = time.monotonic()
        for t in self._threads:
            t.join(timeout=15)

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() - self.started < self.limit

    def _probe(self) -> None:
        """A request every 40 ms whatever the latency (a few in flight at once when the machine is slow), so
        the rate stays about 25/s and a slow answer never hides a gap."""
        from concurrent.futures import ThreadPoolExecutor

        def one() -> None:
            sent = time.monotonic()
            try:
                r = http("GET", self.base + self.path, timeout=5)
                if r.status == 200:
                    self.answers.append(time.monotonic())
                else:
                    self.get_errors.append(f"GET {r.status}: {r.body[:120]!r}")
                    self.failure_times.append(sent)
            except OSError as err:
                self.get_errors.append(f"GET {err!r}")
                self.failure_times.append(sent)

        with ThreadPoolExecutor(max_workers=8) as pool:
            tick = time.monotonic()
            while self._running():
                self.requests += 1
                pool.submit(one)
                tick += 0.04
                time.sleep(max(0.0, tick - time.monotonic()))

    def _write(self) -> None:
        n = 0
        while self._running():
            n += 1
            self.writes += 1
            title = f"traffic {os.getpid()} {self.started:.0f} {n}"
            sent = time.monotonic()
            try:
                r = http("POST", self.base + "/api/posts", {"title": title},
                         headers={"Authorization": f"JWT {self.token}"}, timeout=10)
                if r.status == 201:
                    self.acknowledged.append(r.json()["doc"]["id"])
                else:
                    self.failed_writes += 1
                    self.post_errors.append(f"POST {r.status}: {r.body[:120]!r}")
                    self.failure_times.append(sent)
            except OSError as err:
                self.failed_writes += 1
                self.post_errors.append(f"POST {err!r}")
                self.failure_times.append(sent)
            time.sleep(0.25)

    @property
    def failures(self) -> int:
        return len(self.get_errors)

    @property
    def errors(self) -> list[str]:
        return self.get_errors + self.post_errors

    @property
    def longest_gap(self) -> float:
        """Seconds, the longest stretch without a successful probe answer (start and end included)."""
        points = [self.started, *sorted(self.answers), getattr(self, "ended", time.monotonic())]
        return max(b - a for a, b in zip(points, points[1:], strict=False))

    def summary(self) -> str:
        return (f"{self.requests} requests ({self.requests / max(1e-9, self.ended - self.started):.0f}/s), "
                f"{self.failures} failed; {self.writes} writes, {self.failed_writes} failed; longest gap "
                f"{self.longest_gap:.2f}s")


def variant_image(base: str, ref: str, session: str, cmd: str = "") -> str:
    """`ref`: the image `base` under another tag with a label of its own (another image id), built in a second:
    the next version of a release test, where what is measured is the release and not a `next build`; with
    `cmd`, its container runs `node -e CMD` instead (a version that fails in a chosen way). Labelled with the
    session (tests/testbed/leftovers.sh finds it); removed with remove_variant (an explicit version's image stays
    on this machine otherwise)."""
    lines = [f"FROM {base}", f"LABEL vpskit.test.variant={ref}"]
    if cmd:
        lines.append(f'CMD ["node", "-e", "{cmd}"]')
    out = subprocess.run(["docker", "build", "--label", f"vpskit.testbed.session={session}", "-t", ref, "-"],
                         input="\n".join(lines) + "\n", text=True, capture_output=True,
                         env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return ref


def remove_variant(ref: str) -> None:
    subprocess.run(["docker", "image", "rm", "-f", ref], capture_output=True, timeout=120)


def worker_last_round(vps, app: str) -> float:
    """When the app's jobs worker on `vps` last asked the app (epoch seconds; 0 before its first round)."""
    import calendar

    out = vps.ssh(f"sudo cat /opt/{app}/jobs.json", check=False).stdout
    at = json.loads(out)["at"] if out.strip() else ""
    return calendar.timegm(time.strptime(at, "%Y-%m-%dT%H:%M:%SZ")) if at else 0.0
