"""Rolling releases across app servers, as one deploy run sees them: which servers started a release in
this run and which finished it. pyinfra runs the release operation one batch of servers at a time
(`_serial` / `_parallel`); its `_if` (may_start) stops the rollout at the first failure, and the servers
already released go back to the release before (must_go_back), so that every app server runs one version.

The records are per process (one pyinfra run) and written at execution time, by the operation itself."""

from __future__ import annotations

_started: list[str] = []
_released: list[str] = []


def started(state, host) -> bool:
    _started.append(host.name)
    return True


def released(state, host) -> bool:
    _released.append(host.name)
    return True


def failed() -> list[str]:
    """The servers whose release started in this run and did not finish."""
    return [name for name in _started if name not in _released]


def may_start() -> bool:
    """A server's release starts only while no other server's release in this run has failed."""
    return not failed()


def must_go_back(name: str) -> bool:
    """Server `name` released in this run, and the rollout failed on another server."""
    return bool(failed()) and name in _released


def reset() -> None:
    """(tests) Forget the run's records."""
    _started.clear()
    _released.clear()
