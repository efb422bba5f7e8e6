"""Disaster recovery in two commands, with offsite copies in S3 (an S3-compatible server on the test network,
through restic's s3 backend): posts and media written, a backup copied offsite, the server destroyed with its
volumes, a brand-new server, `deploy.py` then `tasks/restore.py --data from=offsite`: the same titles and the
same media checksums. The wall times go to .testbed/figures/disaster-recovery.json for the closing note."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.sites import Site
from tests.support import S3Server, run_pyinfra
from tests.testbed import vps as testbed_vps

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("example_image")]

ROOT = Path(__file__).resolve().parents[2]
NEVER = "2099-01-01 00:00:00"
KEYS = {"OFFSITE_ACCESS_KEY_ID": "vpskit-test-access", "OFFSITE_SECRET_ACCESS_KEY": "vpskit-test-secret-2b9c"}


@pytest.fixture(scope="module")
def bed(testbed, tmp_path_factory):
    net = testbed_vps.network(f"vpskit-dr-{os.getpid()}", testbed)
    s3 = S3Server(f"vpskit-s3-{os.getpid()}", net, testbed).run().wait_ready()
    env_file = tmp_path_factory.mktemp("operator") / ".env"
    env_file.write_text("POSTGRES_PASSWORD=dr-db-pw\nPAYLOAD_SECRET=dr-payload-secret-0123456789abcdef01\n"
                        "RESTIC_PASSWORD=dr-restic-pw-81f2\n" + "".join(f"{k}={v}\n" for k, v in KEYS.items()))
    env = {"VPSKIT_BACKUP_OFFSITE": f"s3:{s3.endpoint}/vpskit-backups", "VPSKIT_BACKUP_SCHEDULE": NEVER,
           "VPSKIT_DRILL_SCHEDULE": NEVER, "VPSKIT_HEALTH_SCHEDULE": NEVER}
    yield {"net": net, "s3": s3, "env_file": env_file, "env": env}
    s3.remove()


def test_a_new_server_gets_every_row_and_media_file_back_from_offsite(bed, vps_factory):
    old = vps_factory("dr-old", network=bed["net"], docker_ready=True)
    out = run_pyinfra(old, bed["env_file"], "deploy.py", env=bed["env"])
    assert out.returncode == 0, out.stdout[-4000:]
    site = Site(old).open()
    site.register()
    site.add([f"post {i}" for i in range(4)])
    before = site.snapshot()
    assert len(before["posts"]) == 4 and len(before["media"]) == 4
    backup = run_pyinfra(old, bed["env_file"], "tasks/backup.py", env=bed["env"])
    assert backup.returncode == 0, backup.stdout[-3000:]
    name = re.search(r"offsite copy of (\S+): snapshot ([0-9a-f]{8})", backup.stdout)
    assert name, backup.stdout[-3000:]
    site.close()

    # The server is lost: its container, its Docker volume (database, media, images) and the backups on it.
    testbed_vps.remove(old.name)

    new = vps_factory("dr-new", network=bed["net"])
    t0 = time.monotonic()
    deploy = run_pyinfra(new, bed["env_file"], "deploy.py", env=bed["env"])
    t1 = time.monotonic()
    assert deploy.returncode == 0, deploy.stdout[-4000:]
    restore = run_pyinfra(new, bed["env_file"], "tasks/restore.py", "--data", "from=offsite", env=bed["env"])
    t2 = time.monotonic()
    assert restore.returncode == 0, restore.stdout[-4000:]
    assert f"restored backup {name[1]} (offsite snapshot {name[2]})" in restore.stdout
    site = Site(new).open()
    try:
        assert site.snapshot() == before  # every title, every media file byte for byte (sha256)
    finally:
        site.close()
    figures = ROOT / ".testbed" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    (figures / "disaster-recovery.json").write_text(json.dumps(
        {"deploy_s": round(t1 - t0, 1), "restore_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
         "posts": len(before["posts"]), "media": len(before["media"])}))
