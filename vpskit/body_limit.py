"""The largest request the bundled proxy passes to the app (max_body_size): by default the app's own upload limit
(Payload's `upload.limits.fileSize`, read from its config) and room for the form around the file. Above it the
proxy answers 413 with a message in Payload's error format, before the app reads any of it."""

from __future__ import annotations

import re

MB = 1024 * 1024
DEFAULT = 50 * MB  # when the app sets no limit: Payload keeps an upload in memory unless told otherwise
ENVELOPE = MB  # the multipart form around the file (its other fields, the boundaries)
# upload: { ... limits: { ... fileSize: 5_000_000 } } in the root config; a number or a product of numbers
_FILESIZE = re.compile(r"\bupload\s*:\s*\{[^{}]*?\blimits\s*:\s*\{[^{}]*?\bfileSize\s*:\s*([0-9_*\s]+?)\s*[,}\n/]")
_SIZE = re.compile(r"^([0-9]+)([kmg])$")
_UNITS = {"k": 1024, "m": MB, "g": 1024 * MB}


def upload_limit(config_text: str) -> int:
    """Payload's upload.limits.fileSize in bytes; 0 when the config sets none (or not as numbers we can read)."""
    found = _FILESIZE.search(config_text)
    if not found:
        return 0
    product = 1
    for part in found.group(1).split("*"):
        digits = part.strip().replace("_", "")
        if not digits.isdigit():
            return 0
        product *= int(digits)
    return product


def limit(setting: str, upload: int) -> int:
    """max_body_size in bytes: a size as given ("100m"), or for "auto" the app's upload limit and the form's room
    (DEFAULT when the app sets none)."""
    sized = _SIZE.match(setting)
    if sized:
        return int(sized.group(1)) * _UNITS[sized.group(2)]
    return upload + ENVELOPE if upload else DEFAULT


def message(size: int) -> str:
    """What a too large request is answered (in Payload's error format: {"errors": [{"message": ...}]})."""
    return f"Too large: this site takes requests up to {said(size)} (max_body_size)"


def said(size: int) -> str:
    """A limit as the 413 message and the deploy say it: "6 MB", "1.5 MB", "512 kB"."""
    if size >= MB:
        return f"{size / MB:.1f}".removesuffix(".0") + " MB"
    return f"{size / 1024:.0f} kB"


def why(setting: str, upload: int) -> str:
    """Where the limit comes from, for the deploy's output."""
    if setting != "auto":
        return f"max_body_size = {setting}"
    if upload:
        return f"the app's upload.limits.fileSize ({said(upload)}) and {said(ENVELOPE)} for the form"
    return "the app sets no upload.limits.fileSize: vpskit's default"
