"""Bytes on the wire per deploy (issue 12), measured on the VPS's network interface (every byte the SSH
connection carried into it, TCP overhead included; the VPS talks to nothing else meanwhile), next to what
the transfer itself counted, and the wall time of each pyinfra run:

  (a) first deploy to a fresh server      (b) a one-line change to a page     (c) one new npm dependency
  (d) the same version under a second app name on the same server          (e) tasks/rollback.py

    .venv/bin/python bench/ship.py

Needs the example image on this machine (`make test` or a deploy builds it); (b) and (c) build their own
(a few minutes each). For comparison it prints the size of the whole-image stream (`docker save | gzip -1`,
what every deploy sent before) of (b)'s image. Removes its VPS and images after.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import example_version_or_exit  # noqa: E402

from tests.testbed import vps as testbed  # noqa: E402

SHIPPED = re.compile(r"shipped (\S+): (\d+) layer\(s\) sent, (\d+) already on the server, ([0-9.]+) MB over SSH")
STREAMED = re.compile(r"shipped (\S+): (\d+) MB compressed")


def rx_bytes(host: testbed.VPS) -> int:
    """Bytes received by the VPS on all its interfaces but loopback."""
    out = testbed.docker("exec", host.name, "sh", "-c",
                         "cat $(ls -d /sys/class/net/*/statistics | grep -v /lo/ | sed 's|$|/rx_bytes|')").stdout
    return sum(int(n) for n in out.split())


def copy_app(dest: Path) -> Path:
    shutil.copytree(ROOT / "example", dest, ignore=shutil.ignore_patterns("node_modules", ".next", "media"))
    return dest


def main() -> int:
    good = example_version_or_exit()
    host = testbed.start(f"vpskit-bench-ship-{os.getpid()}", session="bench")
    made: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            env_file = tmp_path / ".env"
            env_file.write_text("POSTGRES_PASSWORD=bench-password\nPAYLOAD_SECRET=" + "b" * 40 + "\n")
            env = {**os.environ, **host.env(), "VPSKIT_ENV_FILE": str(env_file), "VPSKIT_IMAGE_TRANSPORT": "ssh",
                   "VPSKIT_BACKUP_BEFORE_UPDATE": "false"}

            # (b) a one-line change to a page; (c) on top of it, one new npm dependency (lock file updated).
            page = copy_app(tmp_path / "page")
            home = page / "src" / "app" / "(frontend)" / "page.tsx"
            home.write_text(home.read_text().replace("<h1>Payload deploy example</h1>",
                                                     "<h1>Payload deploy example (benchmark)</h1>"))
            dep = copy_app(tmp_path / "dep")
            shutil.copy(home, dep / "src" / "app" / "(frontend)" / "page.tsx")
            npm = subprocess.run(["npm", "install", "--package-lock-only", "--no-audit", "--no-fund", "ms@2.1.3"],
                                 cwd=dep, capture_output=True, text=True)
            if npm.returncode != 0:
                sys.exit(f"npm install --package-lock-only ms failed: {npm.stderr[-1000:]}")

            cases = [
                ("(a) first deploy", "deploy.py", ()),
                ("(b) one-line change", "deploy.py", ("--data", f"app_path={page}")),
                ("(c) new npm dependency", "deploy.py", ("--data", f"app_path={dep}")),
                ("(d) same, 2nd app name", "deploy.py", ("--data", f"app_path={dep}", "--data", "app_name=example2",
                                                          "--data", "publish_port=3001")),
                ("(e) rollback", "tasks/rollback.py", ()),
            ]
            print(f"{'case':<24} {'wire MB':>8} {'app MB':>7} {'layers sent':>11} {'skipped':>7} {'wall s':>7}")
            for name, deploy_file, args in cases:
                before = rx_bytes(host)
                t0 = time.monotonic()
                out = subprocess.run([str(ROOT / ".venv/bin/pyinfra"), "-y", "inventory.py", deploy_file, *args],
                                     cwd=ROOT, env=env, capture_output=True, text=True)
                wall = time.monotonic() - t0
                if out.returncode != 0:
                    sys.exit(f"{name} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
                wire = (rx_bytes(host) - before) / 1e6
                text = out.stdout + out.stderr
                # The images this benchmark built (never the test bed's postgres or caddy it also shipped).
                made += sorted({m.group(1) for m in SHIPPED.finditer(text) if m.group(1).startswith("example:")}
                               - {f"example:{good}", *made})
                app = [m for m in SHIPPED.finditer(text) if m.group(1).startswith("example")]
                sent = sum(int(m.group(2)) for m in app)
                skipped = sum(int(m.group(3)) for m in app)
                app_mb = sum(float(m.group(4)) for m in app)
                print(f"{name:<24} {wire:>8.1f} {app_mb:>7.1f} {sent:>11} {skipped:>7} {wall:>7.1f}", flush=True)
            changed = next((ref for ref in made if ref.startswith("example:")), "")
            if changed:
                stream = subprocess.run(f"docker save {changed} | gzip -1 | wc -c", shell=True,  # noqa: S602
                                        capture_output=True, text=True).stdout.strip()
                print(f"the whole-image stream of {changed} (every deploy before): {int(stream) / 1e6:.1f} MB")
    finally:
        testbed.remove(host.name)
        second = subprocess.run(["docker", "image", "ls", "example2", "--format", "{{.Repository}}:{{.Tag}}"],
                                capture_output=True, text=True).stdout.split()  # (d)'s tag of the same image
        for ref in made + second:
            subprocess.run(["docker", "rmi", ref], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
