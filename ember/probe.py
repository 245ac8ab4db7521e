"""ember.Probe: a sandbox's readiness probe (Modal's), which `Sandbox.wait_until_ready()` runs.

`Probe.with_tcp(port)` is ready once something in the sandbox accepts connections on the port (on
its own loopback); `Probe.with_exec(*argv)` once the command exits 0 in the sandbox. Either is
tried every `interval_ms`.
"""

from __future__ import annotations

import dataclasses

from . import exception


@dataclasses.dataclass(frozen=True)
class Probe:
    tcp_port: int | None = None
    exec_argv: tuple[str, ...] | None = None
    interval_ms: int = 100

    def __post_init__(self):
        if (self.tcp_port is None) == (self.exec_argv is None):
            raise exception.InvalidError("Probe: give a TCP port or a command: Probe.with_tcp(8080) or "
                                         "Probe.with_exec(\"sh\", \"-c\", \"test -f /tmp/ready\")")
        if self.tcp_port is not None and not (isinstance(self.tcp_port, int) and not isinstance(self.tcp_port, bool)
                                              and 0 < self.tcp_port < 65536):
            raise exception.InvalidError(f"Probe.with_tcp({self.tcp_port!r}): pass a TCP port, 1 to 65535")
        if self.exec_argv is not None and not (self.exec_argv and all(isinstance(a, str) for a in self.exec_argv)):
            raise exception.InvalidError(f"Probe.with_exec{self.exec_argv!r}: pass the command as strings")
        if not (isinstance(self.interval_ms, int) and not isinstance(self.interval_ms, bool) and self.interval_ms > 0):
            raise exception.InvalidError(f"Probe: interval_ms={self.interval_ms!r}: pass milliseconds, more than 0")

    @classmethod
    def with_tcp(cls, port: int, *, interval_ms: int = 100) -> Probe:
        return cls(tcp_port=port, interval_ms=interval_ms)

    @classmethod
    def with_exec(cls, *argv: str, interval_ms: int = 100) -> Probe:
        return cls(exec_argv=tuple(argv), interval_ms=interval_ms)

    def argv(self) -> list[str]:
        """The command that tries it once in the sandbox (exit 0: ready). A TCP port is tried with
        the image's python3, which every image of Ember's has (its runtime needs it)."""
        if self.exec_argv is not None:
            return list(self.exec_argv)
        return ["python3", "-S", "-c", "import socket, sys; s = socket.socket(); s.settimeout(1); "
                f"sys.exit(s.connect_ex(('127.0.0.1', {self.tcp_port})) != 0)"]
