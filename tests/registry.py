"""Test helpers: a real local OCI registry, and pushing a directory to it as an image.

The registry is Debian's `docker-registry` (the CNCF distribution registry). Images are pushed
through the registry's own HTTP API (tar layers, a config and a manifest, written here), which
keeps their layers byte for byte: skopeo would gzip an uncompressed layer on the way.
"""

import gzip
import hashlib
import io
import json
import pathlib
import platform
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.parse
import urllib.request

REGISTRY_PACKAGES = ["docker-registry"]
TOOLS = {"docker-registry": "docker-registry"}  # binary -> Debian package

ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())


def missing_tools() -> list[str]:
    """Debian packages whose binaries are not on PATH (for pytest.skip)."""
    return [pkg for binary, pkg in TOOLS.items() if not shutil.which(binary)]


def start_registry(tmp: pathlib.Path) -> tuple[subprocess.Popen, str]:
    """Start a registry on a free loopback port, storing under tmp; return (proc, "127.0.0.1:PORT")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "registry.yml"
    # No auth and no storage health check (Debian's default config has both); log quietly.
    config.write_text(json.dumps({  # JSON is YAML
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(tmp / "registry-data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }))
    log = open(tmp / "registry.log", "ab")
    proc = subprocess.Popen([shutil.which("docker-registry"), "serve", str(config)], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log = (tmp / "registry.log").read_text()[-2000:]
                raise RuntimeError(f"docker-registry did not start: {log}") from None
            time.sleep(0.05)


def _tar_dir(rootfs: pathlib.Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):  # sorted: parents before children
            tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    return buf.getvalue()


def _tar_files(files: dict[str, bytes | None]) -> bytes:
    """A layer that writes files (bytes) and deletes them (None -> an OCI whiteout), in dict order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            if data is None:
                head, _, base = name.rpartition("/")
                name = f"{head}/.wh.{base}" if head else f".wh.{base}"
                data = b""
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, time.time()
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Pusher:
    """Uploads blobs and manifests to one repository, through the registry's HTTP API."""

    def __init__(self, registry: str, name: str):
        self.base = f"http://{registry}/v2/{name}"

    def _send(self, method: str, url: str, data: bytes, content_type: str):
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        return urllib.request.urlopen(req, timeout=30)

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        # A monolithic upload: POST opens an upload session, PUT with the digest completes it.
        with self._send("POST", f"{self.base}/blobs/uploads/", b"", "application/octet-stream") as r:
            location = urllib.parse.urljoin(self.base, r.headers["Location"])
        sep = "&" if "?" in location else "?"
        self._send("PUT", f"{location}{sep}digest={digest}", data, "application/octet-stream").close()
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def manifest(self, doc: dict, reference: str | None = None) -> dict:
        data = json.dumps(doc).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._send("PUT", f"{self.base}/manifests/{reference or digest}", data, doc["mediaType"]).close()
        return {"mediaType": doc["mediaType"], "digest": digest, "size": len(data)}

    def image(self, layers: list[tuple[bytes, str]], config: dict, arch: str, tag: str | None) -> dict:
        """Push an image of (tar, "gzip"|"none"|"zstd") layers; return its manifest's descriptor."""
        descs = []
        for tar, compression in layers:
            if compression == "gzip":
                descs.append(self.blob(gzip.compress(tar, 1), "application/vnd.oci.image.layer.v1.tar+gzip"))
            elif compression == "zstd":  # only the frame magic: pullers must refuse before decoding
                descs.append(self.blob(b"\x28\xb5\x2f\xfd" + tar, "application/vnd.oci.image.layer.v1.tar+zstd"))
            else:
                descs.append(self.blob(tar, "application/vnd.oci.image.layer.v1.tar"))
        cfg = {"architecture": arch, "os": "linux", "config": config,
               "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t, _ in layers]}}
        return self.manifest({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "config": self.blob(json.dumps(cfg).encode(), "application/vnd.oci.image.config.v1+json"),
                              "layers": descs}, tag)


def push_dir_as_image(rootfs: pathlib.Path, registry: str, name: str, tag: str, tmp: pathlib.Path,
                      extra_layer: dict[str, bytes | None] | None = None, *,
                      config: dict | None = None, index: bool = False, extra_compression: str = "none") -> None:
    """Push directory rootfs to registry as image name:tag (its one layer gzipped, like Docker's).

    extra_layer: a second layer writing files (bytes) or deleting them (None: a whiteout); a
    key ending in "/.wh..wh..opq" with b"" is an opaque-directory marker. It is stored
    uncompressed unless extra_compression says "gzip" (or "zstd", as a fake for the error path).
    config: the OCI config's "config" part (Env as ["K=V"], WorkingDir, Entrypoint, Cmd).
    index: push an image index holding this image for this machine's architecture, and a decoy
    for another one whose root holds a file WRONG-PLATFORM.
    tmp: unused (the image goes straight to the registry); kept for callers' symmetry.
    """
    pusher = _Pusher(registry, name)
    layers = [(_tar_dir(rootfs), "gzip")] + ([(_tar_files(extra_layer), extra_compression)] if extra_layer else [])
    config = config if config is not None else {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]}
    if not index:
        pusher.image(layers, config, ARCH, tag)
        return
    other = "s390x" if ARCH != "s390x" else "amd64"
    decoy = pusher.image([(_tar_files({"WRONG-PLATFORM": b"x"}), "gzip")], config, other, None)
    mine = pusher.image(layers, config, ARCH, None)
    pusher.manifest({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        decoy | {"platform": {"architecture": other, "os": "linux"}},
        mine | {"platform": {"architecture": ARCH, "os": "linux"}}]}, tag)
