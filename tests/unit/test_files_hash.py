"""The deploy decides "configuration changed" by comparing the hash of the files it would push with the hash of the
files on the server, which the server program computes (the ComposeStack fact runs it): one rule, run on both
sides from the same module, through the layout the deploy ships."""

import shutil
import subprocess
from pathlib import Path

from vpskit import commands
from vpskit.server import history

ROOT = Path(__file__).resolve().parents[2]


def shipped(tmp_path: Path) -> Path:
    app_dir = tmp_path / "opt" / "example"
    (app_dir / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "files" / "vpskit-server", app_dir / "bin" / "vpskit-server")
    shutil.copytree(ROOT / "vpskit" / "server", app_dir / "bin" / "vpskit_server",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return app_dir


def server_hash(app_dir: Path) -> str:
    return subprocess.run(["bash", "-c", commands.files_hash(str(app_dir))], capture_output=True, text=True,
                          check=False).stdout.strip()  # the fact reads its output only, inside $(...)


def test_the_server_hashes_the_files_in_place_as_the_deploy_hashes_what_it_pushes(tmp_path):
    app_dir = shipped(tmp_path)
    compose, env, route = "services: {}\n", "A='1'\n", "example.test {\n}\n"
    (app_dir / "docker-compose.yml").write_text(compose)
    (app_dir / ".env").write_text(env)
    assert server_hash(app_dir) == history.files_hash(compose, env)  # no route: it counts as empty
    (app_dir / "proxy-route.caddy").write_text(route)
    assert server_hash(app_dir) == history.files_hash(compose, env, route)
    (app_dir / ".env").write_text("A='2'\n")
    assert server_hash(app_dir) != history.files_hash(compose, env, route)


def test_no_hash_when_a_file_is_missing_or_the_server_program_is_not_there_yet(tmp_path):
    app_dir = shipped(tmp_path)
    (app_dir / "docker-compose.yml").write_text("services: {}\n")
    assert server_hash(app_dir) == ""  # no .env
    assert server_hash(tmp_path / "elsewhere") == ""  # a server an older vpskit deployed: it releases once
