"""What a run from another machine must not drop (review item 6): the server's .env names the variables that came
from an operator's .env; a deploy (or a task, for NOTIFY_URL) from a .env without one of them is refused with one
line, unless --data env_remove allows it. The server's side is read by a fact whose command runs here on files."""

from __future__ import annotations

import subprocess

from vpskit import commands, envfile, settings
from vpskit.facts import ConfigKeys
from vpskit.render import render

LAPTOP = {"POSTGRES_PASSWORD": "pw", "PAYLOAD_SECRET": "s" * 40, "SMTP_HOST": "mail", "SMTP_PASSWORD": "x",
          "NOTIFY_URL": "https://hooks.example.com/a", "RESTIC_PASSWORD": "r", "VPSKIT_HOST": "h"}


def server_files(tmp_path, values: dict, notify: bool):
    """The server's live .env as a deploy from `values` renders it, and a root-only configuration."""
    s = settings.load({})
    env = envfile.server_env(values, s)
    app, conf = tmp_path / "opt" / "example", tmp_path / "etc" / "vpskit" / "example"
    app.mkdir(parents=True)
    conf.mkdir(parents=True)
    (app / ".env").write_text(render(".env", **s, env=env, env_header=envfile.header(values, env)))
    (conf / "offsite.env").write_text("export VPSKIT_APP='example'\n" + ("export NOTIFY_URL='u'\n" if notify else ""))
    return str(app), str(conf)


def fact(app: str, conf: str) -> dict:
    out = subprocess.run(["bash", "-c", commands.config_keys(app, conf)], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    return ConfigKeys().process(out.stdout.splitlines())


def test_the_server_env_names_the_operators_variables_and_its_secrets(tmp_path):
    app, conf = server_files(tmp_path, LAPTOP, notify=True)
    state = fact(app, conf)
    # Kit settings and the root-only secrets are not the app's: only what reaches its environment.
    assert state == {"operator": {"POSTGRES_PASSWORD", "PAYLOAD_SECRET", "SMTP_HOST", "SMTP_PASSWORD"},
                     "notify": True}
    text = open(f"{app}/.env").read()
    secrets = next(line for line in text.splitlines() if line.startswith(envfile.SECRET_HEADER)).split(":")[1].split()
    assert secrets == ["DATABASE_URI", "DATABASE_URL", "PAYLOAD_SECRET", "POSTGRES_PASSWORD", "SMTP_PASSWORD"]
    assert "pw" not in " ".join(text.splitlines()[:4])  # names only in the header


def test_a_ci_env_without_the_laptops_variables_is_refused_naming_them(tmp_path):
    state = fact(*server_files(tmp_path, LAPTOP, notify=True))
    ci = {"POSTGRES_PASSWORD": "pw", "PAYLOAD_SECRET": "s" * 40}
    gone = envfile.dropped(state["operator"], state["notify"], ci, set())
    assert gone == ["NOTIFY_URL", "SMTP_HOST", "SMTP_PASSWORD"]
    line = envfile.dropped_message(gone)
    assert "\n" not in line and "--data env_remove=NOTIFY_URL,SMTP_HOST,SMTP_PASSWORD" in line
    assert envfile.dropped(state["operator"], state["notify"], ci, {"SMTP_HOST", "SMTP_PASSWORD", "NOTIFY_URL"}) == []
    assert envfile.dropped(state["operator"], state["notify"], LAPTOP, set()) == []


def test_a_task_checks_the_alerts_only(tmp_path):
    state = fact(*server_files(tmp_path, LAPTOP, notify=True))
    ci = {"POSTGRES_PASSWORD": "pw", "PAYLOAD_SECRET": "s" * 40}
    assert envfile.dropped(None, state["notify"], ci, set()) == ["NOTIFY_URL"]
    assert envfile.dropped(None, False, ci, set()) == []


def test_an_env_written_by_an_older_vpskit_or_none_is_not_checked(tmp_path):
    app, conf = server_files(tmp_path, LAPTOP, notify=False)
    lines = [ln for ln in open(f"{app}/.env").read().splitlines() if not ln.startswith("# vpskit")]
    open(f"{app}/.env", "w").write("\n".join(lines) + "\n")
    assert fact(app, conf) == {"operator": None, "notify": False}
    assert fact(str(tmp_path / "nothing"), str(tmp_path / "none")) == {"operator": None, "notify": False}
    assert envfile.dropped(None, False, {}, set()) == []
