"""POSTGRES_PASSWORD against the password the database on the server accepts (review item 3): the verifiers
below were stored by the test bed's PostgreSQL 17 for the passwords named (SCRAM-SHA-256, its default, and md5)."""

import pytest

from vpskit import commands
from vpskit.dbpassword import password_matches, saslprep

# ALTER ROLE payload PASSWORD 'tx-p@ss wörd "q"' (non-ASCII: hashed after SASLprep), then in md5 'md5-pass'.
SCRAM = ("SCRAM-SHA-256$4096:Jj9lYhzHlPw426C0cooacw==$hR/ALklPiyLWT+fq8bTp4QXhcb1jpqWDXbld24Y9ZTI=:"
         "szlYt+3OJR4HMqSfqOyqpyM3b/sU32IxfcCz6JObzZI=")
MD5 = "md50f4ebee73cfeb07755d3c157bbb5ed65"


def test_the_password_the_database_was_given_matches_and_any_other_does_not():
    assert password_matches(SCRAM, "payload", 'tx-p@ss wörd "q"') is True
    assert password_matches(SCRAM, "payload", 'tx-p@ss word "q"') is False
    assert password_matches(SCRAM + "\n", "payload", "") is False
    assert password_matches(MD5, "payload", "md5-pass") is True
    assert password_matches(MD5, "another_role", "md5-pass") is False


@pytest.mark.parametrize("verifier", ["", "plain-text", "SCRAM-SHA-256$x:y$z:w", "SCRAM-SHA-256$4096:!!$a:b"])
def test_a_verifier_of_an_unknown_kind_refuses_nothing(verifier):
    assert password_matches(verifier, "payload", "anything") is None


def test_saslprep_as_postgres_applies_it():
    assert saslprep("plain ascii\t") == "plain ascii\t"  # ASCII as it is (PostgreSQL's fast path)
    assert saslprep("a\u00a0b") == "a b"  # a non-ASCII space maps to a space
    assert saslprep("\u00bd") == "1\u20442"  # NFKC
    assert saslprep("x\u0007\u00e9") == "x\u0007\u00e9"  # a prohibited character: the password as it is


def test_the_verifier_is_read_only_where_the_db_service_runs():
    line = commands.role_password("/opt/my app")
    assert line.startswith("cd '/opt/my app' 2>/dev/null && ") and "docker compose ps -q db" in line
    assert "select rolpassword from pg_authid where rolname = current_user" in line
