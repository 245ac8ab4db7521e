"""GPU kinds, requests and assignment: shared by the SDK, the control plane and the worker.

A request is what `gpu=` takes: "H100", "A100:2", "any", ...; a kind is what a worker reports
for each of its devices, as one of Modal's names when the driver's name maps to one.
Stdlib only, and no I/O: discovery of the devices themselves is in ember.worker.gpus.
"""

import re
import threading

GPU_TYPES = ("T4", "L4", "A10G", "A100", "A100-40GB", "A100-80GB", "L40S", "H100", "H200", "B200")
MAX_GPUS_PER_REQUEST = 8

_KINDS = {k.upper(): k for k in GPU_TYPES + ("any",)}
_A100_FAMILY = {"A100", "A100-40GB", "A100-80GB"}
# Above this much memory an A100 whose name does not say its size is the 80GB model
# (the 80GB reports 81920 MiB, the 40GB 40960 or 40536 MiB).
_A100_80GB_MIN_MB = 60_000


class GpuRequestError(ValueError):
    pass


def parse_request(gpu) -> tuple[str, int]:
    """("H100", 1) for "H100", ("A100", 2) for "a100:2", ("any", 1) for "any", ("", 0) for none."""
    if gpu is None:
        return "", 0
    if not isinstance(gpu, str):
        raise GpuRequestError(f"gpu={gpu!r}: pass a string such as \"H100\", \"A100:2\" or \"any\"")
    text = gpu.strip()
    if not text:
        return "", 0
    m = re.fullmatch(r"([A-Za-z0-9-]+)\s*(?::\s*(\d+))?", text)
    if m is None or m.group(1).upper() not in _KINDS:
        raise GpuRequestError(f"gpu={gpu!r}: unknown GPU type. Use one of {', '.join(GPU_TYPES)} or "
                              f"\"any\", optionally with a count, as in \"A100:2\"")
    count = int(m.group(2) or 1)
    if not 1 <= count <= MAX_GPUS_PER_REQUEST:
        raise GpuRequestError(f"gpu={gpu!r}: the count must be 1 to {MAX_GPUS_PER_REQUEST}")
    return _KINDS[m.group(1).upper()], count


def normalize(name: str, memory_mb: int) -> str:
    """The kind of a device from its driver name ("NVIDIA H100 80GB HBM3" -> "H100").

    A name that maps to none of GPU_TYPES comes back without its "NVIDIA " prefix, so that the
    device is still listed and usable by gpu="any".
    """
    rest = re.sub(r"^(NVIDIA|Tesla)\s+", "", name.strip(), flags=re.IGNORECASE)
    # The model is the first word: "A100-SXM4-80GB", "H100 PCIe", "L40S"; compared whole, so
    # that "A10" is not "A100" and "GH200" is not "H200".
    model = re.split(r"[\s-]", rest, maxsplit=1)[0].upper()
    if model == "A100":
        size = re.search(r"(40|80)\s*GB", rest, re.IGNORECASE)
        if size:
            return f"A100-{size.group(1)}GB"
        if memory_mb > 0:
            return "A100-80GB" if memory_mb >= _A100_80GB_MIN_MB else "A100-40GB"
        return "A100"
    if model in _KINDS and model != "ANY":
        return _KINDS[model]
    return re.sub(r"^NVIDIA\s+", "", name.strip(), flags=re.IGNORECASE)


def matches(kind_requested: str, gpu_kind: str) -> bool:
    """Whether a device of gpu_kind serves a request for kind_requested ("any", "A100", ...)."""
    want, have = kind_requested.upper(), gpu_kind.upper()
    if want == "ANY":
        return True
    if want == "A100":  # the size is left open: either A100 will do
        return have in _A100_FAMILY
    return want == have


class GpuAllocator:
    """Which of a worker's GPUs are free, and to whom the others are assigned.

    Built from the kinds of the worker's devices, index i being device i. A request for several
    GPUs gets devices of one kind only (a multi-GPU job expects identical devices, even when
    "any" or "A100" would match several kinds); among those, the lowest indices first.
    """

    def __init__(self, kinds: list[str]):
        self.kinds = list(kinds)
        self._owners: dict[int, str] = {}  # device index -> owner
        self._lock = threading.Lock()  # the worker may assign and release from several threads

    def free(self) -> list[int]:
        with self._lock:
            return [i for i in range(len(self.kinds)) if i not in self._owners]

    def assign(self, owner: str, request: str) -> list[int] | None:
        """Device indices for the request, now held by owner; None if not possible right now.

        Raises GpuRequestError for an invalid request; [] for a request of no GPU.
        """
        kind, count = parse_request(request)
        if count == 0:
            return []
        with self._lock:
            free = [i for i in range(len(self.kinds)) if i not in self._owners]
            chosen = self._pick(free, kind, count)
            if chosen is not None:
                self._owners.update((i, owner) for i in chosen)
            return chosen

    def release(self, owner: str) -> list[int]:
        """Frees every device owner holds; returns their indices."""
        with self._lock:
            held = sorted(i for i, o in self._owners.items() if o == owner)
            for i in held:
                del self._owners[i]
            return held

    def can_ever_satisfy(self, request: str) -> bool:
        """Whether the request fits this worker when all its GPUs are free."""
        kind, count = parse_request(request)
        return count == 0 or self._pick(list(range(len(self.kinds))), kind, count) is not None

    def _pick(self, candidates: list[int], kind: str, count: int) -> list[int] | None:
        groups: dict[str, list[int]] = {}  # kind -> matching indices; in order of first index
        for i in candidates:
            if matches(kind, self.kinds[i]):
                groups.setdefault(self.kinds[i].upper(), []).append(i)
        for indices in groups.values():
            if len(indices) >= count:
                return indices[:count]
        return None
