"""Every shell command in the README and docs/ is run by a test, or marked **(server)** as needing a real
server. Commands are the inline code spans and ```sh blocks that start with a command this kit documents."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_START = ("pyinfra ", ".venv/bin/pyinfra ", "make ", "python -m ", "cp ", "ssh-keyscan ", "git clone")
SERVER = "**(server)**"


def commands():
    """(file, command, marked_server) for every command in the docs."""
    for doc in DOCS:
        text = doc.read_text()
        for block in re.finditer(r"```sh\n(.*?)```", text, flags=re.S):
            before = text[max(0, block.start() - 300):block.start()].rstrip().split("\n\n")[-1]
            for line in block.group(1).splitlines():
                line = line.split("#")[0].strip()
                if line:
                    yield doc.name, line, SERVER in before
        for paragraph in re.split(r"\n\s*\n|\n(?=\s*[-|0-9])", re.sub(r"```.*?```", "", text, flags=re.S)):
            for span in re.findall(r"`([^`\n]+)`", paragraph):
                if span.startswith(COMMAND_START):
                    yield doc.name, span, SERVER in paragraph


def text_run_by_tests() -> str:
    paths = [*ROOT.glob("tests/**/*.py"), ROOT / ".ci" / "run", ROOT / "Makefile", *ROOT.glob("tests/testbed/*.sh")]
    return "\n".join(p.read_text() for p in paths)


def is_tested(command: str, tests: str) -> bool:
    words = shlex.split(command.replace("<", "").replace(">", "").replace("|", " "))
    if words[0] == "make":
        return f'"make", "{words[1]}"' in tests or f"make {words[1]}" in tests
    if words[0] in ("pyinfra", ".venv/bin/pyinfra"):
        deploy_file = next(w for w in words if w.endswith(".py") and w != "inventory.py")
        keys = [w.split("=")[0] for w in words if "=" in w]
        flags = [w for w in words if w.startswith("--") and w != "--data"]
        return f'"{deploy_file}"' in tests and all(f'"{k}=' in tests for k in keys) and all(
            f'"{f}"' in tests for f in flags)
    if words[:3] == ["python", "-m", "vpskit.docs"]:
        return '"vpskit.docs"' in tests
    return False


def test_every_documented_command_is_tested_or_marked_for_a_real_server():
    tests = text_run_by_tests()
    found = list(commands())
    assert len(found) >= 20
    untested = [f"{doc}: {cmd}" for doc, cmd, server in found if not server and not is_tested(cmd, tests)]
    assert not untested, "documented commands neither run by a test nor marked **(server)**:\n" + "\n".join(untested)
