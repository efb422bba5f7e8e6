"""The Node version an app asks for, and the node image that gives it.

An app says which Node it runs on in package.json's `engines.node` (an npm semver range such as ">=24.15.0" or
"^18.20.2 || >=20.9.0") and, for the developer's tools, in `.nvmrc` or `.node-version` (one version: "22",
"v24.15.0", "lts/jod"). The image is picked from both: `node_image` when set (refused when its tag names a Node
that the app does not accept), otherwise `node:<major>-bookworm-slim` for the first acceptable major in
PREFERENCE (22, vpskit's default, first: an app that accepts it builds as it always did).

    want = node_version.read(Path("example"))          # NodeWant(engines=">=20.9.0", pin=None, ...)
    node_version.choose("", want)                       # Choice("node:22-bookworm-slim", "...")
    node_version.choose("node:22-bookworm-slim", NodeWant(engines=">=24"))   # raises SettingsError
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vpskit.settings import SettingsError

DEFAULT_MAJOR = 22
IMAGE = "node:{major}-bookworm-slim"  # the official images' Debian 12 slim variant, the default's family
# The majors vpskit picks from, in order: the default, then the newer LTS lines, then the older ones; odd
# (short-lived) majors only when nothing else is accepted.
PREFERENCE = (22, 24, 26, 28, 30, 20, 18, 16, 25, 27, 29, 23, 21, 19, 17)
# nvm's LTS aliases (lts/<codename>) and the major each names.
LTS_CODENAMES = {"argon": 4, "boron": 6, "carbon": 8, "dubnium": 10, "erbium": 12, "fermium": 14, "gallium": 16,
                 "hydrogen": 18, "iron": 20, "jod": 22, "krypton": 24}
PIN_FILES = (".nvmrc", ".node-version")

Version = tuple[int, int, int]
INFINITY: Version = (10**9, 0, 0)
_PART = r"(\d+|[xX*])"
_COMPARATOR = re.compile(rf"(>=|<=|>|<|=|\^|~>?)?\s*v?{_PART}(?:\.{_PART})?(?:\.{_PART})?(?:-[0-9A-Za-z.-]+)?"
                         r"(?:\+[0-9A-Za-z.-]+)?")
_HYPHEN = re.compile(r"^\s*(\S+)\s+-\s+(\S+)\s*$")
_TAG_VERSION = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-|$)")


@dataclass(frozen=True)
class NodeWant:
    """What an app's sources say of its Node version."""

    engines: str = ""  # package.json engines.node, as written ("" = none)
    pin: int | None = None  # the major of .nvmrc / .node-version, when it names one
    pin_file: str = ""  # which file pinned it

    def describe(self) -> str:
        parts = [f'package.json engines.node "{self.engines}"'] if self.engines else []
        if self.pin is not None:
            parts.append(f"{self.pin_file} {self.pin}")
        return " and ".join(parts)

    def accepts(self, major: int, exact: Version | None = None) -> bool:
        """Node `major` (or the exact version, when known) satisfies every constraint."""
        if self.pin is not None and major != self.pin:
            return False
        return not self.engines or satisfies(self.engines, major, exact)


@dataclass(frozen=True)
class Choice:
    image: str
    why: str  # one line for the build's output: which Node and from what


def _number(part: str | None) -> int | None:
    return None if part is None or part in "xX*" else int(part)


def _parts(match: re.Match) -> tuple[int | None, int | None, int | None]:
    major, minor, patch = (_number(match.group(i)) for i in (2, 3, 4))
    if major is None:
        minor = patch = None
    if minor is None:
        patch = None
    return major, minor, patch


def _floor(parts) -> Version:
    return tuple(p or 0 for p in parts)  # type: ignore[return-value]


def _above(parts) -> Version:
    """The first version past everything `parts` names (22 -> 23.0.0, 22.1 -> 22.2.0, 22.1.3 -> 22.1.4)."""
    major, minor, patch = parts
    if major is None:
        return INFINITY
    if minor is None:
        return (major + 1, 0, 0)
    if patch is None:
        return (major, minor + 1, 0)
    return (major, minor, patch + 1)


def _interval(comparator: re.Match) -> tuple[Version, Version]:
    """[low, high) of the versions one comparator accepts."""
    op, parts = comparator.group(1) or "=", _parts(comparator)
    major, minor, _ = parts
    if major is None:  # *, x: anything (an operator with a wildcard too)
        return (0, 0, 0), INFINITY
    if op == ">=":
        return _floor(parts), INFINITY
    if op == ">":
        return _above(parts), INFINITY
    if op == "<":
        return (0, 0, 0), _floor(parts)
    if op == "<=":
        return (0, 0, 0), _above(parts)
    if op == "^":
        if major > 0 or minor is None:
            return _floor(parts), (major + 1, 0, 0)
        return _floor(parts), (0, minor + 1, 0) if minor > 0 else _above(parts)
    if op.startswith("~"):
        return _floor(parts), (major + 1, 0, 0) if minor is None else (major, minor + 1, 0)
    return _floor(parts), _above(parts)  # =, or a bare (partial) version


def ranges(text: str) -> list[tuple[Version, Version]]:
    """The intervals an npm semver range accepts (one per `||` alternative); SettingsError when unreadable."""
    out = []
    for alternative in text.split("||"):
        low, high = (0, 0, 0), INFINITY
        if hyphen := _HYPHEN.match(alternative):
            first, last = (_COMPARATOR.fullmatch(side) for side in hyphen.groups())
            if not (first and last):
                raise SettingsError(f'package.json engines.node "{text}" is not a version range npm reads: '
                                    'write it as npm does, e.g. ">=22" or "^22.11.0"')
            out.append((_floor(_parts(first)), _above(_parts(last))))
            continue
        rest = alternative.strip()
        while rest:
            match = _COMPARATOR.match(rest)
            if not match or not match.group(0):
                raise SettingsError(f'package.json engines.node "{text}" is not a version range npm reads: '
                                    'write it as npm does, e.g. ">=22" or "^22.11.0"')
            lo, hi = _interval(match)
            low, high = max(low, lo), min(high, hi)
            rest = rest[match.end():].lstrip(" ,")
        out.append((low, high))
    return out


def satisfies(text: str, major: int, exact: Version | None = None) -> bool:
    """Whether the range accepts `exact`, or (no exact version known) some release of `major`: an image tagged
    only with its major gives that major's newest release."""
    for low, high in ranges(text):
        if exact is not None:
            if low <= exact < high:
                return True
        elif max(low, (major, 0, 0)) < min(high, (major + 1, 0, 0)):
            return True
    return False


def image_version(ref: str) -> tuple[int, Version | None] | None:
    """(major, exact version or None) the image's tag names: node:24-bookworm-slim -> (24, None),
    node:24.15.0-slim -> (24, (24, 15, 0)); None when the tag names no version (node:lts, a digest)."""
    if "@" in ref:
        return None
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return None
    match = _TAG_VERSION.match(tag)
    if not match:
        return None
    major, minor, patch = (None if g is None else int(g) for g in match.groups())
    return major, (major, minor, patch) if patch is not None else None


def _pin(text: str) -> int | None:
    """The major a .nvmrc / .node-version line names (22, v24.15.0, lts/jod); None for lts/*, node, system."""
    word = text.strip().split("#", 1)[0].strip().lower()
    if word.startswith("lts/"):
        return LTS_CODENAMES.get(word[4:])
    match = re.match(r"^v?(\d+)(\.|$)", word)
    return int(match.group(1)) if match else None


def read(app_path: Path) -> NodeWant:
    """What the app at `app_path` says of its Node version (package.json, .nvmrc, .node-version)."""
    try:
        engines = json.loads((app_path / "package.json").read_text()).get("engines") or {}
        wanted = str(engines.get("node", "")).strip() if isinstance(engines, dict) else ""
    except (OSError, ValueError, AttributeError):
        wanted = ""
    if wanted:
        ranges(wanted)  # unreadable: said now, before anything is built
    for name in PIN_FILES:
        path = app_path / name
        if path.is_file() and (major := _pin(path.read_text(errors="replace"))) is not None:
            return NodeWant(wanted, major, name)
    return NodeWant(wanted)


def choose(node_image: str, want: NodeWant) -> Choice:
    """The image the app is built and run on: `node_image` when set (SettingsError when its tag names a Node
    the app does not accept), otherwise the first major in PREFERENCE that the app accepts."""
    asked = want.describe()
    if node_image:
        version = image_version(node_image)
        if version is None:
            return Choice(node_image, f"Node from node_image={node_image} (its tag names no version: not checked "
                                      f"against {asked or 'the app'})")
        major, exact = version
        if asked and not want.accepts(major, exact):
            better = next((m for m in PREFERENCE if want.accepts(m)), None)
            fix = (f'set node_image = "{IMAGE.format(major=better)}", or leave it empty to have it picked'
                   if better else "change what the app asks for")
            raise SettingsError(f"node_image={node_image} gives Node {major}, but the app asks for {asked}: {fix} "
                                "(TROUBLESHOOTING 53)")
        return Choice(node_image, f"Node {major} from node_image={node_image}"
                                  + (f" (the app asks for {asked})" if asked else ""))
    if not asked:
        return Choice(IMAGE.format(major=DEFAULT_MAJOR), f"Node {DEFAULT_MAJOR}, the default (the app names no "
                                                         "Node version)")
    major = next((m for m in PREFERENCE if want.accepts(m)), None)
    if major is None:
        raise SettingsError(f"the app asks for {asked}, which no Node release vpskit picks from satisfies: make "
                            "them agree on one Node major, or set node_image to the image to build on "
                            "(TROUBLESHOOTING 53)")
    return Choice(IMAGE.format(major=major), f"Node {major} ({asked})")


def settle(s: dict) -> None:
    """Puts the choice into the settings the Dockerfile is rendered from: s["node_image"] the image (from
    s["node_image"] as set and s["app"], the AppInfo), s["node_why"] its line for the build's output."""
    choice = choose(s["node_image"], s["app"].node)
    s["node_image"], s["node_why"] = choice.image, choice.why
