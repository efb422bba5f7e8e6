"""The README's configuration reference, built from group_data/all.py.

    python -m vpskit.docs            # print the reference
    python -m vpskit.docs --write    # rewrite it between the markers in README.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from vpskit.settings import defaults

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- config:start -->", "<!-- config:end -->"


def reference() -> str:
    lines, section = [], None
    for d in defaults():
        if d.section != section:
            section = d.section
            lines += ["", f"**{section}**", "", "| setting | default | what it does |", "| --- | --- | --- |"]
        value = repr(d.value) if not isinstance(d.value, str) or d.value else '""'
        lines.append(f"| `{d.key}` | `{value}` | {d.doc} |")
    return "\n".join(lines[1:])


def readme_with_reference(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference()}\n{END}{tail}"


def main() -> int:
    if "--write" in sys.argv:
        README.write_text(readme_with_reference(README.read_text()))
    else:
        print(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
