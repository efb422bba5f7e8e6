"""What the README and docs/ name exists (review item 17: DOCKER-DEPLOYMENT described a `release.sh up` that
was gone): every path of this kit they mention is in the repository, and every server script command they
show is one the script accepts."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"(?<![\w/.-])((?:files|vpskit|tasks|tests|bench|templates|group_data|docs|example)/[\w./*-]+)")
SCRIPT_COMMAND = re.compile(r"\b([a-z-]+\.sh) ([a-z]+)\b")


def commands_of(script: Path) -> set[str]:
    """The commands a server script's top-level `case` accepts (`  start)`, `  copy) ...`)."""
    return {word for line in script.read_text().splitlines()
            for word in (re.match(r"^  ([a-z|-]+)\)", line) or [None, ""])[1].split("|") if word}


def test_every_path_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        for found in PATH.findall(doc.read_text()):
            path = found.rstrip(".,:)")
            if "*" in path:
                ok = any(ROOT.glob(path))
            else:
                ok = (ROOT / path).exists()
            if not ok:
                missing.append(f"{doc.name}: {path}")
    assert not missing, missing


def test_every_server_script_command_the_docs_show_is_one_it_accepts():
    wrong = []
    for doc in DOCS:
        for script, command in SCRIPT_COMMAND.findall(doc.read_text()):
            path = ROOT / "files" / script
            if path.exists() and command not in commands_of(path):
                wrong.append(f"{doc.name}: {script} {command} (it accepts {sorted(commands_of(path))})")
    assert not wrong, wrong
    from vpskit.server.cli import parser

    release = next(a for a in parser()._subparsers._group_actions[0].choices["release"]._subparsers._group_actions)
    assert {"start", "rollback", "follow", "list", "run"} <= set(release.choices)
