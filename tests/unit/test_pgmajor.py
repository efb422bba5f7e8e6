"""Which PostgreSQL major an image runs and the data holds, and when a deploy is refused for it."""

import pytest

from vpskit import pgmajor


@pytest.mark.parametrize(("ref", "env", "major"), [
    ("postgres:17", "", "17"),
    ("postgres:17.2-bookworm", "", "17"),
    ("docker.io/library/postgres:16-alpine@sha256:abc", "", "16"),
    ("pgvector/pgvector:pg16", "", "16"),
    ("postgis/postgis:15-3.4", "", "15"),
    ("timescale/timescaledb:latest-pg17", "", "17"),
    ("postgres:9.6", "", "9.6"),
    ("postgres", "", ""),
    ("postgres:latest", "", ""),
    ("registry.example.com:5000/db", "", ""),  # a registry's port is not a tag
    ("my/db:latest", "18", "18"),  # the image's PG_MAJOR wins over its tag
    ("postgres:17", "15", "15"),
])
def test_image_major(ref, env, major):
    assert pgmajor.image_major(ref, env) == major


def test_a_newer_major_over_older_data_is_refused_with_both_versions_and_the_way_out():
    line = pgmajor.refusal("15", "17", "postgres:17")
    assert "postgres_image postgres:17 is PostgreSQL 17" in line
    assert "holds PostgreSQL 15 data" in line
    assert "set postgres_image back to a PostgreSQL 15 image" in line
    assert "TROUBLESHOOTING.md #55" in line and "\n" not in line


def test_an_older_major_over_newer_data_is_refused_too():
    line = pgmajor.refusal("17", "15", "postgres:15")
    assert "older than the PostgreSQL 17 data" in line and "back to a PostgreSQL 17 image" in line


@pytest.mark.parametrize(("data", "image"), [("17", "17"), ("", "17"), ("15", ""), ("9.6", "9.6")])
def test_no_refusal_for_the_same_major_no_data_or_an_unknown_image(data, image):
    assert pgmajor.refusal(data, image, "postgres:x") == ""


def test_nine_six_is_older_than_ten():
    assert "older than" in pgmajor.refusal("10", "9.6", "postgres:9.6")


def test_the_state_is_read_from_both_data_layouts_and_the_image_environment():
    cmd = pgmajor.state_command("shop", "postgres:17")
    assert "docker volume inspect -f '{{.Mountpoint}}' shop_db-data" in cmd
    assert '"$d/PG_VERSION" "$d"/*/docker/PG_VERSION' in cmd  # PGDATA at the root, or 18's MAJOR/docker
    assert "docker image inspect" in cmd and "postgres:17" in cmd
    assert pgmajor.parse_state(["data 15", "image 17"]) == ("15", "17")
    assert pgmajor.parse_state(["data 15"]) == ("15", "")
    assert pgmajor.parse_state([]) == ("", "")


def test_the_state_command_runs_in_a_shell(tmp_path):
    """The command as a shell runs it, against a fake `docker` that reports a volume laid out as 18's image
    does and an image environment."""
    import os
    import subprocess

    vol = tmp_path / "vol"
    (vol / "18" / "docker").mkdir(parents=True)
    (vol / "18" / "docker" / "PG_VERSION").write_text("18\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(f"#!/bin/sh\ncase \"$1\" in volume) echo {vol} ;; image) printf 'PATH=/x\\nPG_MAJOR=18\\n' ;; "
                    "esac\n")
    fake.chmod(0o755)
    out = subprocess.run(["sh", "-c", pgmajor.state_command("shop", "postgres:18")], capture_output=True,
                         text=True, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert pgmajor.parse_state(out.stdout.splitlines()) == ("18", "18")


@pytest.mark.parametrize(("version", "major"), [
    ("17.6", "17"), ("17.6 (Debian 17.6-1.pgdg13+1)", "17"), ("18beta1", "18"), ("9.6.24", "9.6"), ("10.1", "10"),
    ("15\n", "15"), ("", ""),
])
def test_the_major_of_a_server_version(version, major):
    from vpskit.server.database import major as major_of

    assert major_of(version) == major
