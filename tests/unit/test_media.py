"""Media in a bucket (media_bucket) as the deploying machine renders it: what the app's environment gains, what
the root-only file of the server that takes the backups gains (an rclone remote), and one clear line for what
is missing."""

from __future__ import annotations

import pytest

from vpskit import envfile, settings, tasks
from vpskit.media import MediaStore, several_app_servers_check
from vpskit.offsite import Offsite
from vpskit.settings import SettingsError

BASE = {"POSTGRES_PASSWORD": "pg-pw", "PAYLOAD_SECRET": "x" * 40}
KEYS = {"S3_ACCESS_KEY_ID": "media-access", "S3_SECRET_ACCESS_KEY": "media-secret"}


def plan(**over) -> dict:
    return tasks.paths(settings.load(over))


def test_no_bucket_keeps_media_on_the_app_server():
    s = plan()
    assert MediaStore.of(s, BASE) is None
    env = envfile.server_env(BASE, s)
    assert not [k for k in env if k.startswith("S3_")]
    conf = Offsite.of(s, BASE)
    assert "rclone" not in conf.packages() and "VPSKIT_MEDIA_REMOTE" not in conf.env()


def test_a_bucket_reaches_the_app_with_its_keys():
    s = plan(media_bucket="site-media", media_endpoint="https://s3.example.net/", media_region="eu-central-1")
    env = envfile.server_env({**BASE, **KEYS}, s)
    assert env["S3_BUCKET"] == "site-media" and env["S3_REGION"] == "eu-central-1"
    assert env["S3_ENDPOINT"] == "https://s3.example.net"
    assert env["S3_ACCESS_KEY_ID"] == "media-access" and env["S3_SECRET_ACCESS_KEY"] == "media-secret"


def test_aws_itself_needs_no_endpoint():
    store = MediaStore.of(plan(media_bucket="site-media"), KEYS)
    assert "S3_ENDPOINT" not in store.app_env()
    rclone = store.rclone_env()
    assert rclone["RCLONE_CONFIG_VPSKITMEDIA_PROVIDER"] == "AWS" and "RCLONE_CONFIG_VPSKITMEDIA_ENDPOINT" not in rclone


def test_the_backup_server_gets_an_rclone_remote_in_its_root_only_file():
    s = plan(media_bucket="site-media", media_endpoint="http://s3:5000")
    conf = Offsite.of(s, {**BASE, **KEYS})
    env = conf.env()
    assert env["VPSKIT_MEDIA_REMOTE"] == "vpskitmedia:site-media"
    assert env["RCLONE_CONFIG_VPSKITMEDIA_TYPE"] == "s3" and env["RCLONE_CONFIG_VPSKITMEDIA_PROVIDER"] == "Other"
    assert env["RCLONE_CONFIG_VPSKITMEDIA_ENDPOINT"] == "http://s3:5000"
    assert env["RCLONE_CONFIG_VPSKITMEDIA_SECRET_ACCESS_KEY"] == "media-secret"
    assert conf.packages() == ["rclone"]
    (file,) = conf.files()
    assert file.mode == "600" and "export VPSKIT_MEDIA_REMOTE=vpskitmedia:site-media" in file.content
    # An app server takes no backups: neither rclone nor a second copy of the keys there.
    app = Offsite.of({**s, "role": "app", "database_host": "10.0.0.7"}, {**BASE, **KEYS})
    assert app.packages() == [] and "VPSKIT_MEDIA_REMOTE" not in app.env()


def test_a_bucket_without_its_keys_is_one_clear_error():
    with pytest.raises(SettingsError, match="media_bucket=site-media needs the bucket's keys: add S3_ACCESS_KEY_ID "
                                            "and S3_SECRET_ACCESS_KEY to .env"):
        envfile.server_env({**BASE, "S3_ACCESS_KEY_ID": "only-one"}, plan(media_bucket="site-media"))


@pytest.mark.parametrize(("key", "value", "hint"), [
    ("media_bucket", "Site_Media", "use the bucket's name"),
    ("media_endpoint", "s3.example.net", "use the endpoint's URL"),
    ("media_region", "EU central", "use a region name"),
])
def test_bad_media_settings_name_the_fix(key, value, hint):
    with pytest.raises(SettingsError, match=f"{key}=.* is not valid: {hint}"):
        settings.load({key: value})


def test_several_app_servers_need_a_bucket():
    several_app_servers_check(1, plan())
    several_app_servers_check(2, plan(media_bucket="site-media"))
    with pytest.raises(SettingsError, match="2 app servers need shared media: set media_bucket"):
        several_app_servers_check(2, plan())
