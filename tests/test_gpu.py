"""GPU requests, kinds, assignment and discovery: logic tests with real-format driver output.

This machine has no GPU, so discovery through the driver is tested for what it must do here
(find nothing, never raise), and the parsing with nvidia-smi output of real machines.
"""

import ctypes.util
import json
import logging
import os
import shutil
import stat
import subprocess
import sys

import pytest

from ember._gpu import GPU_TYPES, GpuAllocator, GpuRequestError, matches, normalize, parse_request
from ember.worker import gpus
from ember.worker.gpus import Gpu, container_env, device_paths, discover, parse_ember_gpus, parse_nvidia_smi

# `nvidia-smi --query-gpu=index,name,uuid,memory.total --format=csv,noheader,nounits`
H100_NODE = """\
0, NVIDIA H100 80GB HBM3, GPU-3f0a1c52-9d4e-7b21-c6e8-0a5d3b7e9f14, 81559
1, NVIDIA H100 80GB HBM3, GPU-b82e4d17-0c6a-4f93-e15b-7d2a9c4f0e36, 81559
2, NVIDIA H100 80GB HBM3, GPU-5c9d0e7a-3b1f-d648-2a0c-e9f7b1d4a52c, 81559
3, NVIDIA H100 80GB HBM3, GPU-e1a7f3b9-6d2c-805e-94b3-1f8c0a6d7e29, 81559
4, NVIDIA H100 80GB HBM3, GPU-0d4b8e2f-a5c7-3916-fb04-6c1e9d3a8b57, 81559
5, NVIDIA H100 80GB HBM3, GPU-9a6c2f05-e8b3-41d7-5c9a-b0e4f7d1c368, 81559
6, NVIDIA H100 80GB HBM3, GPU-7f3e5a91-2c0d-b84f-a6e1-d9b5c2f0a743, 81559
7, NVIDIA H100 80GB HBM3, GPU-c4b1d8e6-7f9a-2e05-3d8c-5a7f1b9e0d62, 81559
"""
A100_NODE = """\
0, NVIDIA A100-SXM4-80GB, GPU-89fd41e1-18b2-f499-c12b-82bcb9bf0a3f, 81920
1, NVIDIA A100-SXM4-80GB, GPU-1e2d3c4b-5a69-7887-96a5-b4c3d2e1f0a9, 81920
"""
# Uneven spacing, a blank line and CRLF endings: what a wrapper script or a copy may add.
MIXED_NODE = "\r\n 0,  Tesla T4 , GPU-2a7f0dae-a692-1c44-2c57-6645a0d1e7b4 , 15360\r\n\r\n" \
             "1, NVIDIA A100-PCIE-40GB, GPU-e9c9aa65-bff3-405a-ab7c-dc879cc8f169, 40960\r\n"


# ---- requests ------------------------------------------------------------------------------

@pytest.mark.parametrize("request_, expected", [
    (None, ("", 0)), ("", ("", 0)), ("  ", ("", 0)),
    ("H100", ("H100", 1)), ("h100", ("H100", 1)), ("a100:2", ("A100", 2)), ("any", ("any", 1)),
    ("ANY:3", ("any", 3)), ("A100-80GB:4", ("A100-80GB", 4)), (" l40s : 8 ", ("L40S", 8)),
])
def test_parse_request(request_, expected):
    assert parse_request(request_) == expected


@pytest.mark.parametrize("bad", ["H1000", "A100-20GB", "V100", "RTX4090", "H100:x", "H100:", ":2", "H100,L4"])
def test_parse_request_unknown_kind_lists_the_kinds_and_the_form(bad):
    with pytest.raises(GpuRequestError) as e:
        parse_request(bad)
    assert all(k in str(e.value) for k in GPU_TYPES) and '"A100:2"' in str(e.value)


@pytest.mark.parametrize("bad", ["H100:0", "H100:9", "any:16"])
def test_parse_request_count_is_1_to_8(bad):
    with pytest.raises(GpuRequestError, match="1 to 8"):
        parse_request(bad)


@pytest.mark.parametrize("bad", [1, True, ["H100"], {"kind": "H100"}])
def test_parse_request_wants_a_string(bad):
    with pytest.raises(GpuRequestError, match="pass a string"):
        parse_request(bad)


def test_request_error_is_a_value_error():
    assert issubclass(GpuRequestError, ValueError)


# ---- kinds -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, memory_mb, kind", [
    ("NVIDIA H100 80GB HBM3", 81559, "H100"),
    ("NVIDIA H100 PCIe", 81559, "H100"),
    ("NVIDIA H100 NVL", 95830, "H100"),
    ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
    ("NVIDIA A100 80GB PCIe", 81920, "A100-80GB"),
    ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
    ("NVIDIA A100-PCIE-40GB", 40536, "A100-40GB"),
    ("NVIDIA A100-SXM4", 81920, "A100-80GB"),  # size from the memory when the name lacks it
    ("NVIDIA A100-SXM4", 40960, "A100-40GB"),
    ("NVIDIA A100-SXM4", 0, "A100"),
    ("Tesla T4", 15360, "T4"),
    ("NVIDIA L4", 23034, "L4"),
    ("NVIDIA A10G", 23028, "A10G"),
    ("NVIDIA L40S", 46068, "L40S"),
    ("NVIDIA H200", 143771, "H200"),
    ("NVIDIA B200", 183359, "B200"),
    # Not one of Modal's kinds: kept, without the vendor, and not mistaken for a near name.
    ("NVIDIA A10", 23028, "A10"),
    ("NVIDIA L40", 46068, "L40"),
    ("NVIDIA GH200 480GB", 97871, "GH200 480GB"),
    ("NVIDIA GeForce RTX 4090", 24564, "GeForce RTX 4090"),
    ("Tesla V100-SXM2-16GB", 16384, "Tesla V100-SXM2-16GB"),
])
def test_normalize(name, memory_mb, kind):
    assert normalize(name, memory_mb) == kind


@pytest.mark.parametrize("requested, kind, ok", [
    ("any", "H100", True), ("any", "GeForce RTX 4090", True), ("ANY", "T4", True),
    ("A100", "A100", True), ("A100", "A100-40GB", True), ("A100", "A100-80GB", True),
    ("a100", "a100-80gb", True), ("A100", "A10G", False), ("A100", "A10", False),
    ("A100-80GB", "A100-80GB", True), ("A100-80GB", "A100-40GB", False), ("A100-80GB", "A100", False),
    ("A100-40GB", "A100-80GB", False),
    ("H100", "H100", True), ("h100", "H100", True), ("H100", "H200", False), ("L4", "L40S", False),
])
def test_matches(requested, kind, ok):
    assert matches(requested, kind) is ok


# ---- assignment ------------------------------------------------------------------------------

def test_allocator_assigns_lowest_free_indices_and_releases():
    a = GpuAllocator(["H100"] * 4)
    assert a.free() == [0, 1, 2, 3]
    assert a.assign("c1", "H100") == [0]
    assert a.assign("c2", "H100:2") == [1, 2]
    assert a.free() == [3]
    assert a.assign("c3", "H100:2") is None  # not now: one free
    assert a.free() == [3]  # a failed assignment takes nothing
    assert a.release("c1") == [0]
    assert a.assign("c3", "H100:2") == [0, 3]
    assert a.release("c2") == [1, 2] and a.release("c3") == [0, 3]
    assert a.release("c3") == [] and a.release("nobody") == []
    assert a.free() == [0, 1, 2, 3]


def test_allocator_kinds_and_any():
    a = GpuAllocator(["T4", "A100-40GB", "A100-80GB", "A100-80GB", "H100"])
    assert a.assign("big", "A100-80GB") == [2]
    assert a.assign("h", "h100") == [4]
    assert a.assign("h2", "H100") is None
    assert a.assign("a", "A100") == [1]  # either size will do
    assert a.assign("x", "any") == [0]
    assert a.assign("y", "any") == [3]
    assert a.assign("z", "any") is None and a.free() == []


def test_allocator_gives_a_multi_gpu_request_one_kind():
    a = GpuAllocator(["T4", "A100-40GB", "A100-80GB", "A100-80GB"])
    # "any:2" and "A100:2" would match mixed devices; they get the two identical ones.
    assert a.assign("p", "any:2") == [2, 3]
    a.release("p")
    assert a.assign("p", "A100:2") == [2, 3]
    assert a.assign("q", "A100:2") is None
    assert a.can_ever_satisfy("any:2") and not a.can_ever_satisfy("any:3")


def test_allocator_no_gpu_request_takes_nothing():
    a = GpuAllocator(["L4"])
    assert a.assign("c", "") == [] and a.assign("c", None) == []
    assert a.free() == [0] and a.can_ever_satisfy("")


def test_allocator_can_ever_satisfy():
    a = GpuAllocator(["H100"] * 8)
    assert a.can_ever_satisfy("H100:8") and a.can_ever_satisfy("any") and a.can_ever_satisfy("h100")
    assert not a.can_ever_satisfy("A100") and not a.can_ever_satisfy("T4")
    a.assign("all", "H100:8")
    assert a.can_ever_satisfy("H100:8")  # regardless of what is assigned now
    assert a.assign("more", "H100") is None
    assert not GpuAllocator([]).can_ever_satisfy("any")
    assert GpuAllocator(["GeForce RTX 4090"]).can_ever_satisfy("any")
    with pytest.raises(GpuRequestError):
        a.can_ever_satisfy("H100:9")
    with pytest.raises(GpuRequestError):
        a.assign("bad", "V100")


def test_allocator_from_discovered_gpus():
    a = GpuAllocator([g.kind for g in parse_nvidia_smi(MIXED_NODE)])
    assert a.assign("c", "A100-40GB") == [1] and a.assign("d", "T4") == [0]


# ---- nvidia-smi output ---------------------------------------------------------------------

def test_parse_nvidia_smi_h100_node():
    found = parse_nvidia_smi(H100_NODE)
    assert [g.index for g in found] == list(range(8))
    assert {g.kind for g in found} == {"H100"} and {g.memory_mb for g in found} == {81559}
    assert found[0] == Gpu(0, "H100", "NVIDIA H100 80GB HBM3", "GPU-3f0a1c52-9d4e-7b21-c6e8-0a5d3b7e9f14", 81559)
    assert len({g.uuid for g in found}) == 8


def test_parse_nvidia_smi_a100_node():
    assert [(g.index, g.kind, g.name, g.memory_mb) for g in parse_nvidia_smi(A100_NODE)] == [
        (0, "A100-80GB", "NVIDIA A100-SXM4-80GB", 81920), (1, "A100-80GB", "NVIDIA A100-SXM4-80GB", 81920)]


def test_parse_nvidia_smi_tolerates_spacing_blank_lines_and_crlf():
    assert parse_nvidia_smi(MIXED_NODE) == [
        Gpu(0, "T4", "Tesla T4", "GPU-2a7f0dae-a692-1c44-2c57-6645a0d1e7b4", 15360),
        Gpu(1, "A100-40GB", "NVIDIA A100-PCIE-40GB", "GPU-e9c9aa65-bff3-405a-ab7c-dc879cc8f169", 40960)]


def test_parse_nvidia_smi_odd_output():
    assert parse_nvidia_smi("") == [] and parse_nvidia_smi("\n\n") == []
    assert parse_nvidia_smi("No devices were found\n") == []
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                            "driver. Make sure that the latest NVIDIA driver is installed and running.\n") == []
    # Memory in units (no nounits) or not available: the GPU is still listed.
    assert parse_nvidia_smi("0, Tesla T4, GPU-a, 15360 MiB\n1, Tesla T4, GPU-b, [N/A]\n") == [
        Gpu(0, "T4", "Tesla T4", "GPU-a", 15360), Gpu(1, "T4", "Tesla T4", "GPU-b", 0)]


# ---- EMBER_GPUS ------------------------------------------------------------------------------

def test_parse_ember_gpus():
    assert parse_ember_gpus("H100,H100") == [Gpu(0, "H100", "H100", "", 0), Gpu(1, "H100", "H100", "", 0)]
    assert [g.kind for g in parse_ember_gpus(" t4 , a100-80gb:2 ")] == ["T4", "A100-80GB", "A100-80GB"]
    assert [g.index for g in parse_ember_gpus("L4:3,H100")] == [0, 1, 2, 3]
    assert parse_ember_gpus("none") == [] and parse_ember_gpus("NONE") == []
    for bad in ["H1000", "any", "H100:0", "H100,,L4", "H100:x"]:
        with pytest.raises(ValueError, match="EMBER_GPUS"):
            parse_ember_gpus(bad)


def test_discover_with_ember_gpus(monkeypatch, caplog):
    monkeypatch.setenv("EMBER_GPUS", "A100-80GB:2,T4")
    assert [(g.index, g.kind) for g in discover()] == [(0, "A100-80GB"), (1, "A100-80GB"), (2, "T4")]
    monkeypatch.setenv("EMBER_GPUS", "none")
    assert discover() == []
    monkeypatch.setenv("EMBER_GPUS", "H100:two")
    with caplog.at_level(logging.WARNING, logger="ember.worker"):
        assert discover() == []  # never raises
    assert "EMBER_GPUS" in caplog.text


# ---- discovery on this machine ---------------------------------------------------------------

NO_DRIVER = ctypes.util.find_library("nvidia-ml") is None


@pytest.mark.skipif(not NO_DRIVER, reason="this machine has an NVIDIA driver")
def test_discover_finds_no_gpu_here(monkeypatch):
    monkeypatch.delenv("EMBER_GPUS", raising=False)
    assert discover() == []
    monkeypatch.setenv("EMBER_GPUS", "")  # empty: the same as unset
    assert discover() == []


def fake_nvidia_smi(monkeypatch, tmp_path, script: str):
    """An executable nvidia-smi first on PATH: the machine's real driver behaviour is not ours to vary."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("EMBER_GPUS", raising=False)


@pytest.mark.skipif(not NO_DRIVER, reason="NVML would be used before nvidia-smi")
def test_discover_through_nvidia_smi(monkeypatch, tmp_path):
    (tmp_path / "out.csv").write_text(A100_NODE)
    args = tmp_path / "args"
    fake_nvidia_smi(monkeypatch, tmp_path, f'echo "$@" > {args}\ncat {tmp_path / "out.csv"}\n')
    assert [(g.index, g.kind, g.uuid) for g in discover()] == [
        (0, "A100-80GB", "GPU-89fd41e1-18b2-f499-c12b-82bcb9bf0a3f"),
        (1, "A100-80GB", "GPU-1e2d3c4b-5a69-7887-96a5-b4c3d2e1f0a9")]
    assert args.read_text().split() == gpus.NVIDIA_SMI_QUERY[1:]


@pytest.mark.skipif(not NO_DRIVER, reason="NVML would be used before nvidia-smi")
def test_discover_with_a_broken_driver_warns_and_finds_nothing(monkeypatch, tmp_path, caplog):
    fake_nvidia_smi(monkeypatch, tmp_path, "echo \"NVIDIA-SMI has failed because it couldn't communicate "
                                           "with the NVIDIA driver.\"\nexit 9\n")
    with caplog.at_level(logging.WARNING, logger="ember.worker"):
        assert discover() == []
    assert "exited with code 9" in caplog.text and "couldn't communicate" in caplog.text


@pytest.mark.skipif(not NO_DRIVER, reason="NVML would be used before nvidia-smi")
def test_discover_with_a_hung_nvidia_smi_gives_up(monkeypatch, tmp_path, caplog):
    fake_nvidia_smi(monkeypatch, tmp_path, "exec sleep 30\n")
    monkeypatch.setattr(gpus, "NVIDIA_SMI_TIMEOUT", 0.5)
    with caplog.at_level(logging.WARNING, logger="ember.worker"):
        assert discover() == []
    assert "timed out" in caplog.text


# A stand-in libnvidia-ml.so.1 with the signatures of nvml.h, to run the ctypes calls for real.
FAKE_NVML_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
int nvmlInit_v2(void) { return getenv("FAKE_NVML_FAIL") ? 9 : 0; }  /* NVML_ERROR_DRIVER_NOT_LOADED */
int nvmlShutdown(void) { fprintf(stderr, "nvmlShutdown called\n"); return 0; }
const char *nvmlErrorString(int r) { return r == 9 ? "Driver Not Loaded" : "Unknown Error"; }
int nvmlDeviceGetCount_v2(unsigned *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **h) { *h = (void *)(uintptr_t)(i + 100); return i < 2 ? 0 : 2; }
int nvmlDeviceGetName(void *h, char *name, unsigned len) {
    snprintf(name, len, "%s", (uintptr_t)h == 100 ? "NVIDIA A100-SXM4-40GB" : "NVIDIA A100-SXM4-80GB"); return 0; }
int nvmlDeviceGetUUID(void *h, char *uuid, unsigned len) {
    snprintf(uuid, len, "GPU-00000000-0000-0000-0000-%012u", (unsigned)(uintptr_t)h); return 0; }
int nvmlDeviceGetMemoryInfo(void *h, nvmlMemory_t *m) {
    m->total = ((uintptr_t)h == 100 ? 40960ULL : 81920ULL) << 20; m->used = 1ULL << 20; m->free = m->total - m->used;
    return 0; }
"""


def discover_with_fake_nvml(tmp_path, **env):
    """discover() in a process that loads the stand-in library instead of the (absent) driver's."""
    (tmp_path / "nvml.c").write_text(FAKE_NVML_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "libnvidia-ml.so.1"), str(tmp_path / "nvml.c")],
                   check=True)
    code = ("import dataclasses, json, logging; logging.basicConfig(); from ember.worker.gpus import discover; "
            "print(json.dumps([dataclasses.astuple(g) for g in discover()]))")
    env = {k: v for k, v in os.environ.items() if k != "EMBER_GPUS"} | {"LD_LIBRARY_PATH": str(tmp_path)} | env
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(res.stdout), res.stderr


@pytest.mark.skipif(not NO_DRIVER or shutil.which("cc") is None, reason="needs a C compiler, and no real driver")
def test_discover_through_nvml(tmp_path):
    found, stderr = discover_with_fake_nvml(tmp_path)
    assert found == [[0, "A100-40GB", "NVIDIA A100-SXM4-40GB", "GPU-00000000-0000-0000-0000-000000000100", 40960],
                     [1, "A100-80GB", "NVIDIA A100-SXM4-80GB", "GPU-00000000-0000-0000-0000-000000000101", 81920]]
    assert "nvmlShutdown called" in stderr


@pytest.mark.skipif(not NO_DRIVER or shutil.which("cc") is None, reason="needs a C compiler, and no real driver")
def test_discover_with_nvml_but_no_driver_warns(tmp_path):
    found, stderr = discover_with_fake_nvml(tmp_path, FAKE_NVML_FAIL="1", PATH="/usr/bin:/bin")
    assert found == []
    assert "nvmlInit_v2: Driver Not Loaded (code 9)" in stderr and "nvmlShutdown" not in stderr


# ---- what a container gets -----------------------------------------------------------------

def test_device_paths(tmp_path):
    for node in ["nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"]:
        (tmp_path / node).touch()
    root = str(tmp_path)
    assert device_paths([2], dev_root=root) == [f"{root}/nvidia2", f"{root}/nvidiactl", f"{root}/nvidia-uvm"]
    (tmp_path / "nvidia-uvm-tools").touch()
    (tmp_path / "nvidia-modeset").touch()
    assert device_paths([0, 1], dev_root=root) == [
        f"{root}/nvidia0", f"{root}/nvidia1",
        f"{root}/nvidiactl", f"{root}/nvidia-uvm", f"{root}/nvidia-uvm-tools", f"{root}/nvidia-modeset"]
    assert device_paths([], dev_root=root) == []
    # A GPU's own node is listed even if missing, so that the container fails to start visibly.
    assert device_paths([7], dev_root=root)[0] == f"{root}/nvidia7"


def test_device_paths_on_this_machine():
    assert device_paths([]) == []
    assert device_paths([0])[0] == "/dev/nvidia0"


def test_container_env():
    found = parse_nvidia_smi(H100_NODE)
    env = container_env([found[2], found[5]])
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"  # renumbered inside the container
    assert env["NVIDIA_VISIBLE_DEVICES"] == f"{found[2].uuid},{found[5].uuid}"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    shared = container_env([found[2], found[5]], isolated=False)
    assert shared["CUDA_VISIBLE_DEVICES"] == f"{found[2].uuid},{found[5].uuid}"
    # Declared GPUs have no UUID: their host index stands in.
    declared = parse_ember_gpus("T4:4")
    assert container_env(declared[1:3])["NVIDIA_VISIBLE_DEVICES"] == "1,2"
    assert container_env(declared[1:3], isolated=False)["CUDA_VISIBLE_DEVICES"] == "1,2"
    # No GPU: CUDA sees none of the machine's.
    assert container_env([]) == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                 "NVIDIA_VISIBLE_DEVICES": "void"}
