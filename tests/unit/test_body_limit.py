"""The proxy's request body limit (max_body_size): read from the app's Payload config, said in the 413."""

from __future__ import annotations

import pytest

from tests.unit.test_render import ctx
from vpskit import app_info, body_limit
from vpskit.render import render

MB = 1024 * 1024


@pytest.mark.parametrize(("config", "size"), [
    ("upload: { limits: { fileSize: 5000000 } },", 5_000_000),
    ("upload: {\n    limits: {\n      fileSize: 20 * 1024 * 1024, // 20 MB\n    },\n  },", 20 * MB),
    ("upload: { useTempFiles: true, limits: { files: 1, fileSize: 5_000_000 } }", 5_000_000),
    ("collections: [Media],", 0),  # none set
    ("upload: { limits: { fileSize: MAX_UPLOAD } }", 0),  # not a number vpskit can read: the default then
])
def test_the_apps_upload_limit_is_read_from_its_payload_config(config, size):
    assert body_limit.upload_limit(f"export default buildConfig({{\n  {config}\n}})") == size


@pytest.mark.parametrize(("setting", "upload", "size", "said"), [
    ("auto", 5 * MB, 6 * MB, "6 MB"),  # the app's limit and room for the form around the file
    ("auto", 0, 50 * MB, "50 MB"),
    ("100m", 5 * MB, 100 * MB, "100 MB"),
    ("512k", 0, 512 * 1024, "512 kB"),
    ("1g", 0, 1024 * MB, "1024 MB"),
])
def test_the_limit_follows_the_setting_or_the_app(setting, upload, size, said):
    assert body_limit.limit(setting, upload) == size
    assert body_limit.said(size) == said


def test_each_site_block_answers_413_in_payloads_error_format_above_the_limit(tmp_path):
    info = app_info.AppInfo(**{**ctx()["app"].__dict__, "upload_limit": 5 * MB})
    route = render("proxy-route.caddy", **ctx(info=info, domain="shop.example.com", publish_port=3000))
    assert route.count(f"int({{http.request.header.Content-Length}}) > {6 * MB}`") == 2
    assert route.count('"Too large: this site takes requests up to 6 MB (max_body_size)"}]}` 413') == 2
    assert route.count(f"max_size {6 * MB}") == 2  # a request without Content-Length is cut off there


def test_a_size_that_is_not_one_is_refused_in_one_line():
    from vpskit import settings

    with pytest.raises(settings.SettingsError, match="max_body_size"):
        settings.load({"max_body_size": "lots"})


def test_the_examples_own_limit_sets_its_proxys():
    s = ctx()
    assert s["app"].upload_limit == 24 * MB
    assert "up to 25 MB (max_body_size)" in render("proxy-route.caddy", **s)
