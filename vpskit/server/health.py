"""What "healthy" means, once: for the server program's waits and for the deploy's own check (vpskit.operations
reads it from here), and for the server scripts through `vpskit-server stack states` (vpskit/server/stack.py)."""

from __future__ import annotations

# Docker's container status and healthcheck status ("none" when the service has no healthcheck).
HEALTHY = {("running", "healthy"), ("running", "none")}


def service_healthy(status: str, health: str) -> bool:
    """A service is healthy when its container runs and, if it has a healthcheck, that check passes."""
    return (status, health) in HEALTHY


def stack_healthy(services: dict[str, dict]) -> bool:
    """A stack is healthy when it has at least one service and every one is healthy (no service = not)."""
    return bool(services) and all(service_healthy(s.get("state", "missing"), s.get("health", "none"))
                                  for s in services.values())
