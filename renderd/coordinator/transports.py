"""Which transport reaches a host: agents as local subprocesses, or over SSH."""

from __future__ import annotations

from renderd.config import DaemonConfig, HostConfig
from renderd.coordinator.ssh import SshTransport
from renderd.coordinator.transport import LocalTransport, Transport, default_local_agent_command

DEFAULT_AGENT_COMMAND = ("renderd", "agent")


def make_transport(host: HostConfig, config: DaemonConfig) -> Transport:
    """Return the transport that runs agents on ``host``."""
    if host.is_local:
        command = list(host.agent_command)
        if tuple(command) == DEFAULT_AGENT_COMMAND:
            command = default_local_agent_command()
        return LocalTransport(host.name, config.state_dir / "jobs", command)
    return SshTransport(host, config.timeouts)
