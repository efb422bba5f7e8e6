"""The test bed's pieces for offsite backups and alerts: hosts on one test network reach each other by container
name, and only there; a webhook receiver inside a VPS records what another host POSTs to it; the S3 server
answers S3 requests from a VPS; a storage box lets its user in with that user's key and no other."""

import os

import pytest

from tests.support import S3Server, Webhook, storage_box
from tests.testbed import vps as testbed_vps
from tests.testbed.vps import LABEL, docker

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bed(testbed, vps_factory):
    net = testbed_vps.network(f"vpskit-tbnet-{os.getpid()}", testbed)
    s3 = S3Server(f"vpskit-tbs3-{os.getpid()}", net, testbed).run()
    box = vps_factory("tbbox", network=net)
    client = vps_factory("tbclient", network=net)
    s3.wait_ready()
    yield {"net": net, "s3": s3, "box": box, "client": client}
    s3.remove()
    for vps in (box, client):
        testbed_vps.remove(vps.name)
    testbed_vps.remove_network(net)


def test_hosts_on_the_test_network_reach_each_other_by_name(bed, testbed):
    box, client, net = bed["box"], bed["client"], bed["net"]
    assert testbed_vps.network(net, testbed) == net  # idempotent
    label = docker("network", "inspect", "-f", f'{{{{ index .Labels "{LABEL}.session" }}}}', net).stdout.strip()
    assert label == testbed
    attached = docker("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", box.name)
    assert attached.stdout.split() == [net]
    assert client.exec("getent", "hosts", box.name).stdout.split()[1] == box.name
    assert client.exec("getent", "hosts", bed["s3"].name).returncode == 0
    # SSH from this machine still goes to the port published on 127.0.0.1.
    assert box.ssh("id -un; hostname").stdout.split() == ["deploy", box.name]


def test_webhook_receiver_records_what_another_host_posts(bed):
    box, client = bed["box"], bed["client"]
    hook = Webhook.start(box)
    assert hook.url(box.name) == f"http://{box.name}:8080/hook"
    assert hook.messages() == []

    def post(data: str, *headers: str) -> str:
        args = [a for h in headers for a in ("-H", h)]
        return client.exec("curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", *args,
                           "--data-binary", data, hook.url(box.name) + "?token=t0k").stdout

    assert post('{"text": "backup failed", "ok": false}', "Content-Type: application/json") == "204"
    assert post("not json") == "204"
    messages = hook.messages()
    assert [(m["path"], m["body"]) for m in messages] == [
        ("/hook?token=t0k", {"text": "backup failed", "ok": False}),
        ("/hook?token=t0k", "not json"),
    ]
    assert messages[0]["headers"]["Content-Type"] == "application/json"
    hook.clear()
    assert hook.messages() == []
    assert post("{}") == "204"
    assert [m["body"] for m in hook.messages()] == [{}]


def test_s3_server_answers_a_vps_with_path_style_urls(bed):
    """Signed requests (curl's SigV4, any key) as an S3 client sends them. Two quirks of moto: an unsigned GET of
    an object is refused (403), and a body sent as a form (curl -d's default type) is stored empty."""
    client, s3 = bed["client"], bed["s3"]
    assert s3.endpoint == f"http://{s3.name}:5000"

    def curl(*args: str) -> str:
        return client.exec("curl", "-sS", "-m", "10", "--aws-sigv4", "aws:amz:us-east-1:s3",
                           "--user", f"{s3.access_key}:{s3.secret_key}", *args).stdout

    assert "<Bucket>vpskit-backups</Bucket>" in curl("-X", "PUT", f"{s3.endpoint}/vpskit-backups")
    assert "<Name>vpskit-backups</Name>" in curl(f"{s3.endpoint}/")  # ListBuckets
    status = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                  "--data-binary", "offsite copy", f"{s3.endpoint}/vpskit-backups/host1/config")
    assert status == "200"
    assert curl(f"{s3.endpoint}/vpskit-backups/host1/config") == "offsite copy"
    assert "<Key>host1/config</Key>" in curl(f"{s3.endpoint}/vpskit-backups?list-type=2&prefix=host1/")


def test_storage_box_lets_its_user_in_with_its_key_only(bed):
    box, client = bed["box"], bed["client"]
    key, repo = storage_box(box)
    assert key.parent == testbed_vps.STATE / box.name and oct(key.stat().st_mode & 0o777) == "0o600"
    assert box.exec("stat", "-c", "%U %a", repo).stdout.split() == ["storage", "700"]
    host_key = box.exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    client.exec("sh", "-c", "install -d -m 700 /root/.ssh && cat > /root/.ssh/box_key && chmod 600 /root/.ssh/box_key"
                " && ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/other_key", input=key.read_text())
    client.exec("sh", "-c", "cat > /root/.ssh/known_hosts", input=f"{box.name} {' '.join(host_key)}\n")

    def ssh(key_file: str, *options: str):
        return client.exec("ssh", "-i", key_file, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10", *options,
                           f"storage@{box.name}", f"id -un && touch {repo}/written && ls {repo}", check=False)

    ok = ssh("/root/.ssh/box_key")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["storage", "written"]
    sftp = client.exec("sh", "-c", f"echo 'ls {repo}' | sftp -q -i /root/.ssh/box_key -b - storage@{box.name}",
                       check=False)
    assert sftp.returncode == 0 and f"{repo}/written" in sftp.stdout, sftp.stderr

    other = ssh("/root/.ssh/other_key")
    assert other.returncode == 255 and "Permission denied (publickey)" in other.stderr
    password = ssh("/root/.ssh/box_key", "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert password.returncode == 255 and "Permission denied" in password.stderr
    assert "passwordauthentication no" in box.exec("sshd", "-T").stdout.lower()
