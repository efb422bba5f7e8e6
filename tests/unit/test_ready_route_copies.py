"""The example's readiness route is vpskit's (files/app/api/health/ready/route.ts) with the example's own
getPayload and version: its checks must stay the same, or the e2e tests on example/ prove another route than
the one users copy."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def checks(path: Path) -> str:
    """The route's check() function, with the one line that differs (how it gets Payload) set aside."""
    text = path.read_text()
    body = text[text.index("async function check()"):text.index("export async function GET")]
    return re.sub(r"const payload = await getPayload\([^)]*\)", "const payload = <getPayload>", body)


def test_the_example_checks_readiness_as_the_route_users_copy():
    assert checks(ROOT / "example/src/app/api/health/ready/route.ts") == checks(
        ROOT / "files/app/api/health/ready/route.ts")
