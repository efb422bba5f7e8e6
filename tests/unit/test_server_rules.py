"""The server program's small rules, each from a recorded output: requests in flight from Caddy's admin API, why
a container will not get ready, the release log's line, and which images a release prunes."""

import json

from vpskit.server import history
from vpskit.server.docker import container_failure
from vpskit.server.proxy import in_flight, route_text
from vpskit.server.release import app_version, failed_migration, unrecorded

UPSTREAMS = ('[{"address":"example-app-1:3000","num_requests":2,"fails":0},'
             '{"address":"example-app-2:3000","num_requests":0,"fails":0},'
             '{"address":"example-app-1:3000","num_requests":1,"fails":0}]')


def test_requests_in_flight_are_counted_per_upstream_and_unknown_counts_as_none():
    assert in_flight(UPSTREAMS, "example-app-1:3000") == 3
    assert in_flight(UPSTREAMS, "example-app-2:3000") == 0
    assert in_flight("", "x:1") == 0 and in_flight("<html>", "x:1") == 0


def test_why_a_container_will_not_get_ready():
    assert container_failure(("exited", 0, 137), 0, 0) == "exited with code 137"
    assert container_failure(("running", 3, 0), 1, 0) == "crashed and was restarted (2 since the wait began)"
    assert container_failure(("running", 0, 0), 0, 3) == "cannot reach its database (3 errors logged)"
    assert container_failure(("running", 0, 0), 0, 2) == ""
    assert container_failure(None, 0, 0) == "is gone"


def test_payloads_error_line_names_the_failed_migration_whatever_the_exit_status():
    out = "Migrating: m1\nMigrated: m1\nError running migration 20261201_x.ts: boom\n"
    assert failed_migration(out) == "20261201_x.ts" and failed_migration("Migrated: m1") == ""
    assert unrecorded(("m2", "m1"), ["m1"]) == ["m2"]


def test_the_release_log_line_is_one_json_line_whatever_the_reason_holds():
    line = history.LogLine("t", "v2", "abc", "ann\ton laptop", "release:failed", "3", "two\nlines").line()
    assert line.count("\n") == 1 and json.loads(line)["reason"] == "two lines"
    assert history.LogLine.parse(line) == history.LogLine("t", "v2", "abc", "ann on laptop", "release:failed", "3",
                                                          "two lines")


def test_an_older_vpskits_tab_separated_log_lines_are_still_read_and_kept(tmp_path):
    log = tmp_path / "log"
    log.write_text("2026-12-01T10:00:00Z\tv1\tabc\tann\trelease:ok\t12\t-")  # no newline at its end
    history.write_log(log, history.LogLine("2026-12-02T10:00:00Z", "v2", "def", "bob", "release:failed", "3", "x"))
    lines = [history.LogLine.parse(ln) for ln in log.read_text().splitlines()]
    assert [(ln.version, ln.result) for ln in lines] == [("v1", "release:ok"), ("v2", "release:failed")]
    assert not (tmp_path / ".log.new").exists() and oct(log.stat().st_mode)[-3:] == "644"
    assert history.LogLine.parse("{not json").version == ""  # a damaged line is read as empty, not a crash


def test_a_release_prunes_images_of_no_kept_release_but_never_the_ones_pushed_next():
    refs = ["example:v1", "example:v2", "example:v3", "example:<none>"]
    assert history.images_to_prune(refs, {"v2"}, {"example:v3"}) == ["example:v1"]
    assert history.compose_images('  app:\n    image: "example:v3"\n  db:\n    image: postgres:17\n') == {
        "example:v3", "postgres:17"}
    assert app_version('  app:\n    image: example:v3\n  db:\n    image: postgres:17\n') == "v3"
    assert route_text("reverse_proxy @UPSTREAM@", "a:3000") == "reverse_proxy a:3000"
