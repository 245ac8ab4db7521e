"""CRIU, which checkpoints and restores processes (memory snapshots): installed on first need.

Debian 12's criu 3.17 cannot run on kernels from 6.13 (they split the vvar mapping: "vdso:
Unexpected rt vDSO area bounds"); criu 4.1 from Debian trixie can. So the worker fetches
trixie's criu and the libraries it needs (apt-get download, against a trixie sources list in an
apt state directory of its own: the machine's apt is left as it is), unpacks them into its cache
and runs criu through that folder's own dynamic loader, with that folder's libraries.
"""

import os
import pathlib
import shutil
import subprocess
import threading

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
_lock = threading.Lock()


class CriuUnavailable(Exception):
    """CRIU cannot be installed or run here; the message says why and what to do."""


def argv(cache: pathlib.Path) -> list[str]:
    """The command that runs CRIU 4.1 (installed into cache/criu first if it is not there)."""
    root = cache / "criu"
    with _lock:
        if not (root / "ok").exists():
            _install(root)
    return command(root)


def kdat(cache: pathlib.Path) -> pathlib.Path:
    """Where criu's kernel probe is kept between restores: it holds for this boot of this kernel."""
    boot = pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return cache / "criu" / f"kdat-{boot}"


def command(root: pathlib.Path) -> list[str]:
    return [str(root / "usr/lib64/ld-linux-x86-64.so.2"), "--library-path", str(root / "usr/lib/x86_64-linux-gnu"),
            str(root / "usr/sbin/criu")]


def _install(root: pathlib.Path):
    if os.uname().machine != "x86_64" or shutil.which("apt-get") is None:
        raise CriuUnavailable("memory snapshots need CRIU 4.1, which the worker installs from Debian trixie's "
                              "packages with apt-get on x86_64 only: run the worker on a Debian x86_64 machine")
    tmp = root.with_name(f".criu-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    state = tmp / "apt"
    for d in ("lists/partial", "cache/archives/partial", "debs"):
        (state / d).mkdir(parents=True)
    (state / "sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    apt = ["-o", f"Dir::State={state}", "-o", f"Dir::State::Lists={state / 'lists'}", "-o",
           f"Dir::Cache={state / 'cache'}", "-o", f"Dir::Etc::SourceList={state / 'sources.list'}",
           "-o", "Dir::Etc::SourceParts=/nonexistent", "-o", "Dir::State::status=/dev/null", "-o",
           "APT::Sandbox::User=root"]
    try:
        _run(["apt-get", *apt, "update", "-qq"], "fetch Debian trixie's package lists")
        # criu and everything it needs, down to trixie's libc (bookworm's is too old for it).
        tree = _run(["apt-cache", *apt, "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                     "--no-breaks", "--no-replaces", "--no-enhances", "criu"], "resolve criu's dependencies")
        packages = sorted({line for line in tree.splitlines() if line and not line.startswith((" ", "<"))})
        _run(["apt-get", *apt, "download", "-qq", *packages], "download criu", cwd=state / "debs")
        for deb in (state / "debs").glob("*.deb"):
            _run(["dpkg", "-x", str(deb), str(tmp)], f"unpack {deb.name}")
        shutil.rmtree(state)
        _run([*command(tmp), "check"], "run criu check")
        (tmp / "ok").touch()
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(cmd: list[str], what: str, cwd=None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise CriuUnavailable(f"memory snapshots need CRIU 4.1, and installing it failed ({what}: {last[0]}): "
                              "the worker needs root and deb.debian.org reachable once, to fetch criu from "
                              "Debian trixie's packages")
    return r.stdout
