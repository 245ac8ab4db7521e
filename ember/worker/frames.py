"""Where a worker's containers reach the frame transport (ember/_transport.py), on which their
stream to the control plane (ContainerConnect) runs instead of gRPC.

The control plane says where it serves frames each time the worker registers (WorkerCommand's
frames): a TCP port on the host the worker reaches it at, or a unix socket beside its gRPC one.
A process backend's container reaches that directly: its worker gives it the address as
EMBER_FRAMES. A container backend's container reaches nothing of its host but the worker's
relays (relay.py): a second relay socket, bound into it, forwards to wherever the frame
transport is at each connection (a control plane that restarts may listen on another port), and
to nothing else. TLS, where the control plane has it, runs end to end through it as gRPC's does.

With several control planes, or EMBER_TRANSPORT=grpc on the worker, containers use gRPC.
"""

from .. import _transport, config
from ..proto import api_pb2

INSIDE = "/ember/run/frames.sock"  # where a container backend's container finds its frames relay


class Frames:
    def __init__(self, server_url: str):
        self.server_url = server_url
        # One control plane, and frames not turned off: else containers are told nothing.
        self.wanted = "," not in server_url and config.transport() == "frames"
        self.endpoint: api_pb2.TransportEndpointResponse | None = None  # the last the control plane said

    def update(self, endpoint: api_pb2.TransportEndpointResponse):
        self.endpoint = endpoint

    def address(self) -> str | None:
        """Where the frame transport is now, as this machine reaches it: "HOST:PORT" or
        "unix:PATH"; None: nowhere known (gRPC only)."""
        if not self.wanted or self.endpoint is None:
            return None
        return _transport.address_of(self.server_url, self.endpoint)

    def env(self) -> dict[str, str]:
        """A process backend's container's EMBER_FRAMES (empty for none: it replaces what a warm
        parent or a memory snapshot was started with)."""
        return {"EMBER_FRAMES": self.address() or ""}
