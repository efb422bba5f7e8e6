"""Whether POSTGRES_PASSWORD is the password the database on the server accepts. PostgreSQL applies the
image's POSTGRES_PASSWORD only when it creates the database; afterwards the role's password lives in the data
(pg_authid), as a SCRAM-SHA-256 verifier (or md5 from older setups). A .env whose password no longer matches
would release an app that cannot log in, so the deploy compares the two here, before anything changes:

    password_matches(verifier, "payload", values["POSTGRES_PASSWORD"])  # True, False, or None (cannot tell)

The verifier is read from the server (the DatabaseRolePassword fact) and never printed; the password never
leaves this machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stringprep
import unicodedata

_PROHIBITED = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3, stringprep.in_table_c4,
               stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
               stringprep.in_table_c9, stringprep.in_table_a1)


def saslprep(password: str) -> str:
    """The password as PostgreSQL's SCRAM hashes it (RFC 4013 SASLprep, as its pg_saslprep does): ASCII as it
    is; otherwise mapped and NFKC-normalised, and, when that is not allowed, the password as it is."""
    if password.isascii():
        return password
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    prepared = unicodedata.normalize("NFKC", mapped)
    if any(check(c) for c in prepared for check in _PROHIBITED):
        return password
    rand_al = [stringprep.in_table_d1(c) for c in prepared]
    if any(rand_al) and (any(stringprep.in_table_d2(c) for c in prepared) or not (rand_al[0] and rand_al[-1])):
        return password
    return prepared


def password_matches(verifier: str, user: str, password: str) -> bool | None:
    """Whether `password` is the one `verifier` (pg_authid.rolpassword of role `user`) was made from; None when
    the verifier is of a kind not known here (nothing is refused then)."""
    verifier = verifier.strip()
    if verifier.startswith("SCRAM-SHA-256$"):
        try:
            iterations, rest = verifier.removeprefix("SCRAM-SHA-256$").split(":", 1)
            salt, keys = rest.split("$", 1)
            stored_key = base64.b64decode(keys.split(":", 1)[0])
            salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), base64.b64decode(salt),
                                         int(iterations))
        except ValueError:
            return None
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)
    if verifier.startswith("md5") and len(verifier) == 35:
        return hmac.compare_digest(verifier, "md5" + hashlib.md5((password + user).encode()).hexdigest())  # noqa: S324
    return None
