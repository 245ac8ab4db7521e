"""What every provisioner backend is given and answers: a worker's shape, what it must run, and
the few calls that differ between cluster managers (submit, cancel, list)."""

import dataclasses
from typing import Protocol

from ..._gpu import parse_request
from ...proto import api_pb2

# A job's states as the decision logic sees them (each backend maps its own onto these).
PENDING, RUNNING = "pending", "running"
JOB_LABEL = "ember-job"  # a provisioned worker's label: the job it runs in, as KIND:ID


def gpu_count(res: api_pb2.Resources) -> int:
    return parse_request(res.gpu)[1] if res.gpu else 0


class ProvisionError(Exception):
    """The cluster manager refused or failed a request; the message says why, in its words."""


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    """What one provisioned worker offers: whole CPUs, MiB, and GPUs of one kind ('any': any kind)."""
    cpu: int
    memory_mb: int
    gpu: str = ""
    gpus: int = 0

    @classmethod
    def fitting(cls, res: api_pb2.Resources, floor: "Shape") -> "Shape":
        """The smallest shape at least `floor` that a container with these resources fits in."""
        kind, count = parse_request(res.gpu) if res.gpu else ("", 0)
        return cls(max(floor.cpu, -int(-res.cpu // 1)), max(floor.memory_mb, res.memory_mb), kind, count)

    def holds(self, res: api_pb2.Resources, used: tuple[float, int, int] = (0.0, 0, 0)) -> bool:
        """Whether a container with these resources fits in what is left of the shape after `used`
        (CPU, MiB, GPUs)."""
        kind, count = parse_request(res.gpu) if res.gpu else ("", 0)
        if count and (used[2] + count > self.gpus or kind not in ("any", self.gpu)):
            return False
        return used[0] + res.cpu <= self.cpu + 1e-9 and used[1] + res.memory_mb <= self.memory_mb

    def describe(self) -> str:
        gpus = f", {self.gpus} GPU {self.gpu}" if self.gpus else ""
        return f"{self.cpu} CPU, {self.memory_mb} MiB{gpus}"


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One worker to start: `ember worker` with these arguments, reaching the control plane at
    server_url with a worker token made for it alone."""
    name: str
    shape: Shape
    server_url: str
    token_id: str
    token_secret: str
    backend: str          # the worker's --backend: auto, container or process
    command: tuple[str, ...]  # how `ember` is run where the worker starts, e.g. ("/opt/ember/bin/ember",)
    extra_env: tuple[tuple[str, str], ...] = ()  # --worker-env
    ca_file: str = ""     # the CA the worker trusts, if the control plane serves TLS with its own

    def worker_args(self, data_dir: str, job: str) -> list[str]:
        """`ember worker`'s arguments; its label JOB_LABEL=job (e.g. slurm:1234) says which job it
        runs in, so that a control plane that restarted knows which of its workers it provisioned."""
        return [*self.command, "worker", "--server", self.server_url, "--name", self.name, "--cpu",
                str(self.shape.cpu), "--memory", str(self.shape.memory_mb), "--backend", self.backend,
                "--data-dir", data_dir, "--label", f"{JOB_LABEL}={job}"]

    def env(self) -> dict[str, str]:
        """The worker's environment: --worker-env's, its token (never on a command line, which
        anyone on the node can read), and the CA if there is one."""
        env = dict(self.extra_env)
        env.update(EMBER_WORKER_TOKEN_ID=self.token_id, EMBER_WORKER_TOKEN_SECRET=self.token_secret)
        if self.ca_file:
            env["EMBER_CA_CERT"] = self.ca_file
        return env


class Backend(Protocol):
    """What differs between cluster managers. Calls block (they run in a thread)."""
    kind: str  # "slurm", "kubernetes": how jobs are named in logs and `ember worker list`

    def submit(self, spec: WorkerSpec) -> str:
        """Ask for a worker; return the job's id. Raise ProvisionError if refused."""

    def cancel(self, job_id: str):
        """End the job (a job already gone is no error)."""

    def jobs(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        """Those of these jobs that have not ended: job id -> (PENDING or RUNNING, the cluster
        manager's reason for it, if any). Raise ProvisionError if it cannot be asked."""
