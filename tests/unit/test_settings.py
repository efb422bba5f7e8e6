"""Settings: every default in group_data/all.py is documented and valid; bad values name key and fix."""

import pytest

from vpskit import settings
from vpskit.settings import SettingsError


def test_every_default_has_a_comment_and_a_check():
    defaults = settings.defaults()
    assert {d.key for d in defaults} == set(settings.CHECKS)
    for d in defaults:
        assert d.doc, f"{d.key} has no one-line comment in group_data/all.py"
        assert d.section, f"{d.key} is under no '# ---' section"


def test_defaults_load():
    s = settings.load({})
    assert s["publish_host"] == "127.0.0.1" and s["keep_images"] == 3


def test_strings_from_the_command_line_are_coerced():
    s = settings.load({"publish_port": "8080", "traefik_labels": "false", "keep_images": "5"})
    assert s["publish_port"] == 8080 and s["traefik_labels"] is False and s["keep_images"] == 5


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("app_memory_limit", "1 GB", "app_memory_limit='1 GB' is not valid: use a Docker memory size"),
        ("app_cpu_limit", "lots", "app_cpu_limit='lots' is not a number of CPUs"),
        ("publish_port", "70000", "publish_port=70000 is out of range: set it between 0 and 65535"),
        ("app_port", "http", "app_port='http' is not a whole number"),
        ("domain", "https://example.com", "domain='https://example.com' is not valid: use a domain name"),
        ("app_name", "My App", "app_name='My App' is not valid: use lowercase letters"),
        ("build_on", "cloud", "build_on='cloud' is not valid: use one of local, server"),
        ("traefik_labels", "maybe", "traefik_labels='maybe' is not a boolean"),
        ("app_root", "opt", "app_root='opt' is not valid: use an absolute path"),
    ],
)
def test_bad_values_name_the_setting_and_the_fix(key, value, message):
    with pytest.raises(SettingsError) as err:
        settings.load({key: value})
    assert str(err.value).startswith(message)


def test_settings_that_only_work_together():
    with pytest.raises(SettingsError, match="traefik_labels=true needs proxy_network and domain"):
        settings.load({"traefik_labels": True})
    with pytest.raises(SettingsError, match="publish_port=0 leaves the app unreachable"):
        settings.load({"publish_port": 0})
    assert settings.load({"publish_port": 0, "proxy_network": "traefik"})["publish_port"] == 0
    with pytest.raises(SettingsError, match="publish_port=22 clashes with SSH or the reverse proxy"):
        settings.load({"publish_port": 22, "publish_host": "0.0.0.0"})
