"""The NVIDIA GPUs of the worker's machine, and what a container needs to use some of them.

discover() asks the driver through NVML (libnvidia-ml.so.1, loaded with ctypes: no Python
package needed), else runs nvidia-smi, else finds no GPU. It never raises: a machine with a
broken driver still serves CPU functions, with a warning in the worker's log.

EMBER_GPUS declares the GPUs instead of asking the driver, for tests and for operators:
  EMBER_GPUS=H100,H100      two H100s, devices 0 and 1
  EMBER_GPUS=A100-80GB:4    four A100-80GBs, devices 0 to 3
  EMBER_GPUS=none           no GPU, even if the machine has some
Kinds are those of ember._gpu.GPU_TYPES, in any case; an empty value is the same as unset.
"""

import ctypes
import dataclasses
import logging
import os
import re
import shutil
import subprocess

from .._gpu import GPU_TYPES, normalize

log = logging.getLogger("ember.worker")

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=index,name,uuid,memory.total",
                    "--format=csv,noheader,nounits"]
NVIDIA_SMI_TIMEOUT = 20.0  # seconds; a wedged driver can hang nvidia-smi indefinitely
# Nodes shared by all GPUs: the driver's control device, unified memory, and display
# (modeset); CUDA needs the first two, and fails oddly without uvm-tools on some versions.
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


@dataclasses.dataclass
class Gpu:
    index: int  # the driver's (NVML's, nvidia-smi's) index, the N of /dev/nvidiaN
    kind: str  # as in ember._gpu: "H100", "A100-80GB", ... or the driver's name if none fits
    name: str  # the driver's name: "NVIDIA H100 80GB HBM3"
    uuid: str  # "GPU-8c35f4c9-..."; "" for a GPU declared by EMBER_GPUS
    memory_mb: int  # MiB, 0 if unknown


def parse_nvidia_smi(csv_text: str) -> list[Gpu]:
    """The GPUs in the output of NVIDIA_SMI_QUERY: one "0, NVIDIA H100 80GB HBM3, GPU-..., 81559"
    line per GPU. Lines that are not of that form ("No devices were found") are skipped."""
    gpus = []
    for line in csv_text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        # Index first and uuid, memory last: whatever is between is the name, commas and all.
        name, uuid = ", ".join(fields[1:-2]), fields[-2]
        memory = re.match(r"\d+", fields[-1])  # "[N/A]" on some virtual GPUs; "81559 MiB" without nounits
        memory_mb = int(memory.group()) if memory else 0
        gpus.append(Gpu(int(fields[0]), normalize(name, memory_mb), name, uuid, memory_mb))
    return sorted(gpus, key=lambda g: g.index)


def parse_ember_gpus(value: str) -> list[Gpu]:
    """The GPUs that an EMBER_GPUS value declares (see the module's docstring); ValueError if invalid."""
    kinds = {k.upper(): k for k in GPU_TYPES}
    gpus: list[Gpu] = []
    if value.strip().lower() == "none":
        return gpus
    for item in value.split(","):
        m = re.fullmatch(r"\s*([A-Za-z0-9-]+)\s*(?::\s*(\d+))?\s*", item)
        if m is None or m.group(1).upper() not in kinds or int(m.group(2) or 1) < 1:
            raise ValueError(f"EMBER_GPUS={value!r}: {item.strip()!r} is not a GPU kind with an optional "
                             f"count, as in \"H100\" or \"A100:2\"; kinds: {', '.join(GPU_TYPES)}")
        for _ in range(int(m.group(2) or 1)):
            gpus.append(Gpu(len(gpus), kinds[m.group(1).upper()], kinds[m.group(1).upper()], "", 0))
    return gpus


def discover() -> list[Gpu]:
    """The machine's GPUs, in index order; [] if there are none or the driver is unusable."""
    declared = os.environ.get("EMBER_GPUS", "")
    if declared.strip():
        try:
            return parse_ember_gpus(declared)
        except ValueError as e:
            log.error("%s; no GPU will be offered", e)
            return []
    try:
        gpus = _from_nvml()
        if gpus is not None:
            return gpus
    except Exception as e:  # the library is there, so the driver should be: say why it is not usable
        log.warning("NVIDIA driver found but not usable through NVML (%s); trying nvidia-smi", e)
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        res = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("nvidia-smi failed (%s); no GPU will be offered", e)
        return []
    if res.returncode != 0:
        log.warning("nvidia-smi exited with code %d (%s); no GPU will be offered",
                    res.returncode, (res.stdout + res.stderr).strip()[:500])
        return []
    return parse_nvidia_smi(res.stdout)


class _Memory(ctypes.Structure):  # nvmlMemory_t (v1), in bytes
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


_NVML_BUFFER_SIZE = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE and NVML_DEVICE_UUID_V2_BUFFER_SIZE


def _from_nvml() -> list[Gpu] | None:
    """The GPUs as NVML reports them; None if there is no NVML library (so no NVIDIA driver).
    Raises RuntimeError if the library is there but a call fails."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None

    def check(ret: int, call: str):
        if ret != 0:  # NVML_SUCCESS
            nvml.nvmlErrorString.restype = ctypes.c_char_p
            raise RuntimeError(f"{call}: {nvml.nvmlErrorString(ret).decode(errors='replace')} (code {ret})")

    check(nvml.nvmlInit_v2(), "nvmlInit_v2")
    try:
        count = ctypes.c_uint()
        check(nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)), "nvmlDeviceGetCount_v2")
        gpus = []
        for i in range(count.value):
            handle = ctypes.c_void_p()  # nvmlDevice_t is an opaque pointer
            check(nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(i), ctypes.byref(handle)),
                  f"nvmlDeviceGetHandleByIndex_v2({i})")
            name = ctypes.create_string_buffer(_NVML_BUFFER_SIZE)
            check(nvml.nvmlDeviceGetName(handle, name, ctypes.c_uint(_NVML_BUFFER_SIZE)), "nvmlDeviceGetName")
            uuid = ctypes.create_string_buffer(_NVML_BUFFER_SIZE)
            check(nvml.nvmlDeviceGetUUID(handle, uuid, ctypes.c_uint(_NVML_BUFFER_SIZE)), "nvmlDeviceGetUUID")
            mem = _Memory()
            check(nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)), "nvmlDeviceGetMemoryInfo")
            name_s, memory_mb = name.value.decode(errors="replace"), mem.total // (1024 * 1024)
            gpus.append(Gpu(i, normalize(name_s, memory_mb), name_s, uuid.value.decode(errors="replace"),
                            memory_mb))
        return gpus
    finally:
        nvml.nvmlShutdown()


def device_paths(indices: list[int], dev_root: str = "/dev") -> list[str]:
    """The device nodes a container needs for the GPUs of these indices: their own /dev/nvidiaN
    (always listed: a missing one is an error the caller should see), then the shared control
    nodes that exist on this machine. [] for no GPU."""
    if not indices:
        return []
    paths = [os.path.join(dev_root, f"nvidia{i}") for i in indices]
    return paths + [p for p in (os.path.join(dev_root, n) for n in CONTROL_NODES) if os.path.exists(p)]


def container_env(gpus: list[Gpu], isolated: bool = True) -> dict[str, str]:
    """The environment that gives a container these GPUs, and hides the others ([] hides all).

    isolated: the container sees only the device_paths() of its GPUs (a namespace backend);
    False when it sees all of the machine's devices (the process backend).
    """
    if isolated:
        # Inside the container only the assigned /dev/nvidiaN nodes exist, so CUDA numbers the
        # devices it can open from 0 again: host GPUs 2 and 5 are the container's 0 and 1.
        visible = [str(i) for i in range(len(gpus))]
    else:
        # All devices are there: name these by UUID, which cannot be confused with another's index.
        visible = [g.uuid or str(g.index) for g in gpus]
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(visible),
        # CUDA orders devices fastest first by default; bus order is nvidia-smi's, and stable.
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        # For the NVIDIA container runtime, which reads host identities; "void" makes it do nothing.
        "NVIDIA_VISIBLE_DEVICES": ",".join(g.uuid or str(g.index) for g in gpus) or "void",
    }
