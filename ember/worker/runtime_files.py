"""The files of Ember's in-container runtime, mounted read-only into every container at /ember/lib.

A container runs the image's own Python, which knows nothing of Ember: the worker gives it the
`ember` package and the few libraries its runtime needs (gRPC, protobuf, cloudpickle, uvloop),
copied from the worker's own environment and compiled to bytecode once. The image's Python must
be the same minor version as the worker's for their compiled extensions to load.
"""

import compileall
import fcntl
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import sys
import threading

import ember

# The runtime's libraries and what they need in turn (grpcio needs typing_extensions).
DISTRIBUTIONS = ("grpcio", "typing_extensions", "protobuf", "cloudpickle", "uvloop")
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def _ember_files() -> list[pathlib.Path]:
    root = pathlib.Path(ember.__file__).parent
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


LOCK = ".in-use"  # in each runtime directory: held shared by every worker process that uses it
_held: list = []  # this process's open locks: released when it exits, however it exits


def prepare(cache: pathlib.Path) -> pathlib.Path:
    """The runtime directory for this worker's Ember and libraries, made once per version and
    held in use by this process; those of other versions that no running worker holds are removed
    (each Ember upgrade, or source change, makes one of 40 MB)."""
    while True:
        dest = _make(cache)
        fd = os.open(dest / LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.stat(dest / LOCK).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # another worker removed it while this one waited for the lock: make it again
    _held.append(fd)
    # Off the worker's start: removing many old versions takes seconds.
    threading.Thread(target=_remove_unused, args=(cache, dest), name="ember-runtime-gc", daemon=True).start()
    return dest


def _remove_unused(cache: pathlib.Path, keep: pathlib.Path):
    for d in cache.glob("py*-*"):
        if d == keep or not d.is_dir():
            continue
        try:
            fd = os.open(d / LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no worker holds it: none of its containers runs
        except BlockingIOError:
            os.close(fd)
            continue
        # Renamed first, so that no worker starting now takes it for made; removed under the lock.
        trash = cache / f".trash-{d.name}-{os.getpid()}"
        try:
            d.rename(trash)
        except OSError:
            os.close(fd)
            continue
        shutil.rmtree(trash, ignore_errors=True)
        os.close(fd)


def _make(cache: pathlib.Path) -> pathlib.Path:
    ember_root = pathlib.Path(ember.__file__).parent
    files = _ember_files()
    key = hashlib.sha256()
    for d in DISTRIBUTIONS:
        key.update(f"{d}=={importlib.metadata.version(d)};".encode())
    for p in files:
        st = p.stat()
        key.update(f"{p.relative_to(ember_root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    dest = cache / f"py{PYTHON_VERSION}-{key.hexdigest()[:16]}"
    if dest.exists():
        return dest
    tmp = cache / f".tmp-{os.getpid()}-{key.hexdigest()[:8]}"
    shutil.rmtree(tmp, ignore_errors=True)
    for d in DISTRIBUTIONS:
        dist = importlib.metadata.distribution(d)
        for f in dist.files or ():
            src = pathlib.Path(dist.locate_file(f))
            if f.parts[0].endswith(".dist-info") or "__pycache__" in f.parts or not src.is_file():
                continue
            target = tmp / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    for p in files:
        target = tmp / "ember" / p.relative_to(ember_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    # The image's Python never writes bytecode here (read-only), so compile it now: a cold
    # start imports all of this.
    compileall.compile_dir(str(tmp), quiet=1, ddir="/ember/lib", workers=1)
    try:
        tmp.rename(dest)
    except OSError:  # another worker made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
