"""Every command the README and docs/ show is run by a test, or marked **(server)** as needing a real server.

An invocation is a task file (deploy.py, tasks/*.py) with each option the docs give it: `--data key=value`
in the same code span or sentence, or a bare `key=value` span in the same table row. It counts as tested
only when one single call in tests/ passes that task file together with that option (and the same flags,
such as --dry): a substring somewhere in the suite is not enough."""

import ast
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SERVER = "**(server)**"
TASK = re.compile(r"(?<![\w/])(deploy\.py|tasks/[a-z_]+\.py)")
OPTION = re.compile(r"(?:^|\s)(?:--data\s+)?([a-z_]+)=")
FLAGS = ("--dry", "--diff", "--debug")


def chunks(text: str):
    """Table rows and paragraphs (list items apart), with their code spans, fenced ```sh lines as their own."""
    for block in re.finditer(r"```sh\n(.*?)```", text, flags=re.S):
        before = text[max(0, block.start() - 300):block.start()].rstrip().split("\n\n")[-1]
        for line in block.group(1).splitlines():
            line = line.split("#")[0].strip()
            if line:
                yield False, [line], SERVER in before
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for part in re.split(r"\n\s*\n|\n(?=\s*[-|0-9])", prose):
        yield part.lstrip().startswith("|"), re.findall(r"`([^`\n]+)`", part), SERVER in part


def invocations():
    """(doc, task file, option key or "", flags, marked (server)) for every documented invocation."""
    for doc in DOCS:
        for is_row, spans, server in chunks(doc.read_text()):
            task = None
            for span in spans:
                found = TASK.search(span)
                if found:
                    task = found.group(1)
                    flags = tuple(f for f in FLAGS if f in span.split())
                    keys = OPTION.findall(span[found.end():]) if "--data" in span else []
                    yield doc.name, task, "", flags, server
                    for key in keys:
                        yield doc.name, task, key, flags, server
                elif task and ("--data" in span or (is_row and re.fullmatch(r"[a-z_]+=\S*", span))):
                    for key in OPTION.findall(span):
                        yield doc.name, task, key, (), server


def calls_in_tests() -> list[list[str]]:
    """The string arguments of each call in the tests (an f-string counts by its constant start)."""
    calls = []
    for path in ROOT.glob("tests/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                args = []
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        args.append(arg.value)
                    elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                        args.append(str(arg.values[0].value))
                calls.append(args)
    return calls


def is_tested(task: str, key: str, flags: tuple[str, ...], calls) -> bool:
    return any(task in args and all(f in args for f in flags)
               and (not key or any(a.startswith(f"{key}=") for a in args)) for args in calls)


def other_commands():
    """`make X` and `python -m vpskit.docs` commands in the docs."""
    for doc in DOCS:
        for _, spans, server in chunks(doc.read_text()):
            for span in spans:
                if span.startswith(("make ", "python -m ")):
                    yield doc.name, span, server


def test_every_documented_invocation_is_run_by_a_test_or_marked_for_a_real_server():
    calls = calls_in_tests()
    found = list(invocations())
    assert len(found) >= 30
    untested = sorted({f"{doc}: {task}{' ' + key + '=' if key else ''} {' '.join(flags)}".rstrip()
                       for doc, task, key, flags, server in found
                       if not server and not is_tested(task, key, flags, calls)})
    assert not untested, "documented invocations that no single test call runs:\n" + "\n".join(untested)


def test_documented_make_and_module_commands_are_run():
    runner = "\n".join(p.read_text() for p in [ROOT / ".ci" / "run", ROOT / "Makefile",
                                              *ROOT.glob("tests/**/*.py"), *ROOT.glob("tests/testbed/*.sh")])
    missing = []
    for doc, span, server in other_commands():
        words = shlex.split(span.replace("<", "").replace(">", ""))
        if words[0] == "make":
            ok = f'"make", "{words[1]}"' in runner or f"make {words[1]}" in runner
        else:
            ok = f'"{words[2]}"' in runner
        if not (ok or server):
            missing.append(f"{doc}: {span}")
    assert not missing, "\n".join(missing)


def test_the_matcher_needs_task_and_option_in_one_call():
    calls = [["tasks/rollback.py"], ["--data", "version=v1"], ["tasks/stop.py", "--data", "remove=true"]]
    assert not is_tested("tasks/rollback.py", "version", (), calls)
    assert is_tested("tasks/stop.py", "remove", (), calls)
    assert is_tested("tasks/rollback.py", "", (), calls)
    assert not is_tested("deploy.py", "", ("--dry",), [["deploy.py"]])
