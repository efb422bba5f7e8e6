"""The README's configuration reference is the one group_data/all.py produces."""

from pathlib import Path

from vpskit import docs

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_reference_matches_the_defaults():
    text = README.read_text()
    assert docs.readme_with_reference(text) == text, "README drifted: run `python -m vpskit.docs --write`"
    for line in docs.reference().splitlines():
        assert line in text


def test_reference_command_prints_the_same_reference():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vpskit.docs"], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == docs.reference().strip()
