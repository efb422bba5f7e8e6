"""hadolint on the rendered Dockerfile, compose-lint on the rendered compose file (nothing above low
severity, except what templates/.compose-lint.yml waives with a reason) and shellcheck on every script."""

import subprocess
import sys
from pathlib import Path

import pytest

from vpskit import app_check, app_info, node_version, settings
from vpskit.render import render

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PNPM_APP = app_info.AppInfo(app_info.PackageManager("pnpm", "pnpm-lock.yaml", "10.12.1"), (".npmrc",), ("m1", "m2"),
                            False, ("/app/media",))
VARIANTS = [{}, {"publish_port": 0, "proxy_network": "web", "domain": "cms.example.com", "traefik_labels": True},
            {"info": PNPM_APP}]

EXAMPLE = Path(__file__).resolve().parents[2] / "example"


def ctx(info=None, **overrides):
    s = settings.load(overrides)
    s.update(app_image="example:abc123", app_version="abc123")
    s["app"] = info or app_check.check(EXAMPLE)
    node_version.settle(s)
    s.update(s["app"].context("example", "abc123"))
    return s


@pytest.mark.parametrize("overrides", VARIANTS)
def test_hadolint_finds_nothing(tmp_path, overrides):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(render("Dockerfile", **ctx(**overrides)))
    out = subprocess.run([BIN / "hadolint", "--failure-threshold", "info", str(dockerfile)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("overrides", VARIANTS)
def test_compose_lint_nothing_above_low(tmp_path, overrides):
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(render("docker-compose.yml", **ctx(**overrides)))
    (tmp_path / ".env").write_text(render(".env", app_name="x", env={"POSTGRES_USER": "u", "POSTGRES_DB": "d"}))
    out = subprocess.run([BIN / "compose-lint", "check", "--strict-config", "--fail-on", "medium", "--config",
                          str(ROOT / "templates" / ".compose-lint.yml"), str(compose)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS" in out.stdout


def test_shellcheck_finds_nothing_in_the_scripts():
    scripts = sorted(str(p) for p in [*ROOT.glob("files/*.sh"), *ROOT.glob("tests/testbed/*.sh")])
    assert {"entrypoint.sh", "media-swap.sh", "setup.sh"} <= {p.rsplit("/", 1)[1] for p in scripts}
    out = subprocess.run([BIN / "shellcheck", "-x", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:]


def test_hadolint_finds_nothing_in_a_build_beside_a_database(tmp_path):
    """The build arguments of a build beside a throwaway database (throwaway values, build stage only)."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(render("Dockerfile", **{**ctx(info=PNPM_APP), "build_with_database": True}))
    out = subprocess.run([BIN / "hadolint", "--failure-threshold", "info", str(dockerfile)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ARG PAYLOAD_SECRET" in dockerfile.read_text()
