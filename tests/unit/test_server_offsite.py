"""Offsite copies (vpskit/server/offsite.py) from recorded restic output: the cause restic gives, its version,
which snapshots the one retention rule forgets, and what a copy added."""

from vpskit.server.offsite import backup_of, cause, summary, to_forget, version_ok


def snap(name: str, short: str) -> dict:
    return {"id": short * 8, "short_id": short, "time": f"{name[:4]}-{name[4:6]}-{name[6:8]}T03:15:00Z",
            "tags": ["vpskit", f"backup={name}"]}


def test_restic_says_why_in_its_first_line_or_in_what_it_kept_retrying():
    assert cause("Fatal: wrong password or no key found\n") == "wrong password or no key found"
    err = "Load(<config/0000>, 0, 0) returned error, retrying after 1s: dial tcp: connection refused\n" * 2
    assert cause(err) == "dial tcp: connection refused"
    assert cause("") == ""


def test_restic_016_or_newer():
    assert version_ok("restic 0.18.0 compiled with go1.24.4 on linux/amd64")
    assert version_ok("restic 0.16.4 compiled with go1.22 on linux/amd64")
    assert not version_ok("restic 0.14.0 compiled with go1.19 on linux/amd64") and not version_ok("")


def test_remote_retention_forgets_what_the_local_rule_drops():
    snaps = [snap(f"202612{d:02d}T031500Z", f"s{d:02d}") for d in range(1, 6)]
    snaps.append({"short_id": "other", "tags": ["vpskit"]})  # not a vpskit backup's: never touched
    assert to_forget(snaps, "20261205T031500Z", (2, 0, 0)) == ["s01", "s02", "s03"]
    assert backup_of(snaps[0]) == "20261201T031500Z" and backup_of({"tags": None}) == ""


def test_a_copy_reports_what_restic_summarised():
    out = ('{"message_type":"status","percent_done":0.5}\n'
           '{"message_type":"summary","snapshot_id":"abcdef0123","data_added_packed":2048,'
           '"total_bytes_processed":1048576}\n')
    assert summary(out)["snapshot_id"] == "abcdef0123" and summary("not json") == {}
