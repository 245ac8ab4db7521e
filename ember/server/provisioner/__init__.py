"""Where worker machines come from: `ember server --provisioner none|slurm|kubernetes`.

"none" (the default): workers are started by hand (`ember worker`), and none of this runs.
Otherwise the control plane asks a cluster manager for workers when queued work has no room
on the connected ones, and lets them go when idle. What to ask for, when, and when to give up
is decisions.py's, shared by every backend; a backend (slurm.py, kubernetes.py) only submits,
cancels and lists jobs (base.py's Backend).
"""

import dataclasses

from .base import Backend, ProvisionError, Shape, WorkerSpec
from .decisions import Provisioner

KINDS = ("none", "slurm", "kubernetes")

__all__ = ["KINDS", "Backend", "ProvisionError", "Provisioner", "ProvisionerConfig", "Shape", "WorkerSpec",
           "open_backend"]


@dataclasses.dataclass
class ProvisionerConfig:
    """What `ember server`'s provisioner flags say."""
    kind: str = "none"
    max_workers: int = 0
    server_url: str = ""        # the control plane's URL as the workers reach it ('': where it listens)
    floor: Shape = Shape(1, 1024)
    idle_window: float = 300.0
    start_timeout: float = 600.0
    worker_backend: str = "auto"
    command: tuple[str, ...] = ()
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # --worker-env
    slurm_partition: str = ""
    slurm_args: tuple[str, ...] = ()
    slurm_output_dir: str = ""
    kubernetes_namespace: str = "default"
    kubernetes_image: str = ""


def open_backend(cfg: ProvisionerConfig) -> Backend:
    if cfg.kind == "slurm":
        from .slurm import SlurmBackend
        return SlurmBackend(cfg.slurm_partition, cfg.slurm_args, cfg.slurm_output_dir)
    if cfg.kind == "kubernetes":
        from .kubernetes import KubernetesBackend
        return KubernetesBackend(cfg.kubernetes_namespace, cfg.kubernetes_image)
    raise ValueError(f"unknown provisioner {cfg.kind!r}: use one of {', '.join(KINDS)}")
