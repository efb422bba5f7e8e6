"""The app's compose stack as restores and the health check ask about it: each service's state
with the one verdict of vpskit/server/health.py, and a bounded wait until the whole stack is healthy that ends
early when a container exits, crashes or keeps failing to reach its database."""

from __future__ import annotations

from dataclasses import dataclass

from .docker import Docker, container_failure
from .effects import Effects
from .health import service_healthy
from .history import now_utc


@dataclass(frozen=True)
class ServiceState:
    service: str
    status: str  # Docker's container status, or "missing"
    health: str  # its healthcheck's status, "none" without one

    @property
    def healthy(self) -> bool:
        return service_healthy(self.status, self.health)

    def line(self) -> str:
        return f"{self.service} {self.status}/{self.health} {'ok' if self.healthy else 'no'}"


def states(d: Docker) -> list[ServiceState]:
    return [ServiceState(s, *d.service_state(s)) for s in d.services()]


def healthy(found: list[ServiceState]) -> bool:
    """A stack is healthy when it has at least one service and every one is healthy."""
    return bool(found) and all(s.healthy for s in found)


def summary(found: list[ServiceState]) -> str:
    return " ".join(f"{s.service} {s.status}/{s.health}" for s in found) or "no services"


def wait_healthy(fx: Effects, seconds: int, label: str) -> bool:
    """Until the stack is healthy, saying so every 10 s; ends early, with the container's last log lines, when a
    service's container exits, crashes or cannot reach its database."""
    d = Docker(fx)
    start, shown, since = fx.clock(), fx.clock(), now_utc()
    baseline: dict[str, int] = {}
    while True:
        found = states(d)
        waited = int(fx.clock() - start)
        if healthy(found):
            fx.say(f"vpskit {label}: healthy after {waited}s: {summary(found)}")
            return True
        for s in found:
            ids = d.ids(s.service)
            if not ids:
                continue
            cid = ids[0]
            baseline.setdefault(cid, d.restarts(cid))
            why = container_failure(d.state(cid), baseline[cid], d.db_errors(cid, since))
            if why and why != "is gone":
                fx.say(f"vpskit {label}: {s.service} {why} after {waited}s; its last log lines:")
                d.tail(cid, 25)
                return False
        if waited >= seconds:
            fx.say(f"vpskit {label}: not healthy after {seconds}s: {summary(found)}")
            return False
        if fx.clock() - shown >= 10:
            fx.say(f"vpskit {label}: waiting for health, {waited}s of {seconds}s: {summary(found)}")
            shown = fx.clock()
        fx.sleep(2)
