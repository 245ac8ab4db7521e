"""ember.Tunnel: a port of a sandbox served through the control plane's HTTP gateway (Modal's
Tunnel, as Sandbox.tunnels() gives it; server/tunnels.py serves it).

`url` is where the gateway serves the port (a path under the gateway's address, whose scheme is
the gateway's: https with `ember server --tls`); `host` and `port` are the gateway's. The gateway
carries HTTP requests, not raw TCP: `tcp_socket` says so.
"""

from __future__ import annotations

import dataclasses

from . import exception


@dataclasses.dataclass(frozen=True)
class Tunnel:
    host: str
    port: int
    url: str = ""  # where the gateway serves it
    unencrypted_host: str = ""
    unencrypted_port: int = 0
    public: bool = False  # reached without a token (Sandbox.create(public_ports=True))

    @property
    def tls_socket(self) -> tuple[str, int]:
        """The gateway's (host, port): TLS when the gateway has it."""
        return self.host, self.port

    @property
    def tcp_socket(self) -> tuple[str, int]:
        raise exception.InvalidError(
            f"tunnel {self.url}: Ember's tunnels carry HTTP through the gateway, not raw TCP: send HTTP requests "
            "to tunnel.url (with your workspace's token unless its ports are public)")
