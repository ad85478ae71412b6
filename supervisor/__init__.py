"""quantrac: supervisor - run and supervise external server processes (stdlib only)."""

from supervisor.process import (
    ManagedProcess,
    ServerStartError,
    free_port,
    free_ports,
    log_tail,
    port_in_use,
    wait_until,
)

__all__ = [
    "ManagedProcess",
    "ServerStartError",
    "free_port",
    "free_ports",
    "log_tail",
    "port_in_use",
    "wait_until",
]
