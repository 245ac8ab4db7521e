"""Pull an OCI/Docker image from a registry and flatten it into a root filesystem directory.

Standard library only. The registry protocol is the OCI distribution spec (the Docker Registry
HTTP API v2): GET the manifest (following an index to this machine's platform), GET the config
and each layer blob, check every digest, then apply the layers in order with OCI whiteouts.
"""

import base64
import concurrent.futures
import hashlib
import http.client
import ipaddress
import json
import os
import pathlib
import platform
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from typing import Callable

DOCKER_HUB = "registry-1.docker.io"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])

# platform.machine() -> OCI architecture name (and variant, where images distinguish one).
ARCHES = {"x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", "v8"),
          "arm64": ("arm64", "v8"), "armv7l": ("arm", "v7"), "i686": ("386", None),
          "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None)}

DIGEST_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class RegistryError(Exception):
    """A pull failed; the message names the image, the URL involved and what to do about it."""


def parse_ref(ref: str) -> tuple[str, str, str]:
    """Split an image reference into (registry host[:port], repository, tag or digest).

    Follows Docker's rules: the first path component is a registry only if it looks like a host
    (has a '.' or ':', or is 'localhost'); otherwise the image is on Docker Hub, where a
    single-component name lives under 'library/'.
    """
    name, digest = ref, None
    if "@" in ref:
        name, digest = ref.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise RegistryError(f"{ref!r}: bad digest {digest!r}; expected sha256:<64 hex digits>")
    tag = "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:  # a ':' in the last component is a tag; one earlier is a host's port
        name, tag = name.rsplit(":", 1)
        if not TAG_RE.match(tag):
            raise RegistryError(f"{ref!r}: bad tag {tag!r}")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repo = first, rest
    else:
        host, repo = DOCKER_HUB, name
    if host in ("docker.io", "index.docker.io"):
        host = DOCKER_HUB
    if host == DOCKER_HUB and "/" not in repo:
        repo = "library/" + repo
    if not REPO_RE.match(repo):
        raise RegistryError(f"{ref!r}: bad repository name {repo!r} (lower case letters, digits, '._-/')")
    # A digest pins the content, so it wins over a tag given alongside it (as Docker does).
    return host, repo, digest or tag


def _is_loopback(host: str) -> bool:
    hostname = urllib.parse.urlsplit("//" + host).hostname or host
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class _Registry:
    """HTTP to one repository of one registry, with the token (or basic) auth registries ask for."""

    def __init__(self, ref: str, host: str, repo: str, insecure: bool | None):
        self.ref, self.repo = ref, repo
        plain = _is_loopback(host) if insecure is None else insecure
        self.base = f"{'http' if plain else 'https'}://{host}/v2/{repo}"
        self.auth: str | None = None  # the Authorization header, once a 401 told us what to send

    def get(self, path: str, accept: str | None = None):
        """GET base/path; return the open response. Authenticates on a 401 and tries again once."""
        url = f"{self.base}/{path}"
        for attempt in (1, 2):
            req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
            if self.auth:
                # Unredirected: blob GETs are often redirected to a CDN or S3, which must not get
                # the registry's token (S3 refuses requests that carry two kinds of auth).
                req.add_unredirected_header("Authorization", self.auth)
            try:
                return urllib.request.urlopen(req, timeout=60)
            except urllib.error.HTTPError as e:
                if e.code == 401 and attempt == 1:
                    self.auth = self._authenticate(e.headers.get("WWW-Authenticate", ""), url)
                    continue
                raise self._http_error(e, url) from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                hint = ("; if it serves plain HTTP, pull with insecure=True"
                        if "ssl" in type(reason).__name__.lower() or "SSL" in str(reason) else
                        "; is the registry running and the host and port right?")
                raise RegistryError(f"pulling {self.ref}: cannot reach {url}: {reason}{hint}") from None

    def _authenticate(self, challenge: str, url: str) -> str:
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        user, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
        basic = ("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()) if user else None
        if scheme.lower() == "basic":
            if not basic:
                raise RegistryError(f"pulling {self.ref}: {url} asks for a login; "
                                    "set REGISTRY_USERNAME and REGISTRY_PASSWORD")
            return basic
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise RegistryError(f"pulling {self.ref}: {url} answered 401 with an auth challenge "
                                f"this client does not know: {challenge!r}")
        # The token flow (what Docker Hub does): ask the realm for a token for this scope,
        # anonymously or with the user's credentials, and send it as a Bearer token.
        query = {"scope": fields.get("scope", f"repository:{self.repo}:pull")}
        if "service" in fields:
            query["service"] = fields["service"]
        token_url = fields["realm"] + ("&" if "?" in fields["realm"] else "?") + urllib.parse.urlencode(query)
        req = urllib.request.Request(token_url)
        if basic:
            req.add_unredirected_header("Authorization", basic)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise RegistryError(f"pulling {self.ref}: the token service {token_url} refused: HTTP {e.code}; "
                                "check REGISTRY_USERNAME and REGISTRY_PASSWORD") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise RegistryError(f"pulling {self.ref}: cannot get a token from {token_url}: {e}") from None
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"pulling {self.ref}: the token service {token_url} gave no token")
        return "Bearer " + token

    def _http_error(self, e: urllib.error.HTTPError, url: str) -> RegistryError:
        try:  # registries explain themselves in {"errors": [{"code":..., "message":...}]}
            detail = "; ".join(f"{x.get('code')}: {x.get('message')}" for x in json.loads(e.read())["errors"])
        except Exception:
            detail = e.reason
        if e.code == 404:
            what = "no such repository or tag; check the image name and tag"
        elif e.code in (401, 403):
            # Docker Hub answers 401 (not 404) for repositories that do not exist, too.
            what = ("access denied, or no such repository; check the name, and for a private "
                    "image set REGISTRY_USERNAME and REGISTRY_PASSWORD")
        elif e.code == 429:
            what = "rate limited by the registry; wait, or log in with REGISTRY_USERNAME/REGISTRY_PASSWORD"
        else:
            what = "the registry failed; try again later"
        return RegistryError(f"pulling {self.ref}: GET {url} -> HTTP {e.code} ({detail}): {what}")

    def manifest(self, reference: str) -> tuple[dict, str, str]:
        """The manifest (or index) for a tag or digest: (parsed JSON, media type, its digest)."""
        with self.get(f"manifests/{reference}", ACCEPT) as r:
            body = r.read()
            media_type = r.headers.get_content_type()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if DIGEST_RE.match(reference) and _hash(reference, body) != reference:
            raise RegistryError(f"pulling {self.ref}: the manifest {self.base}/manifests/{reference} "
                                "does not match its digest; the registry or a proxy altered it")
        doc = json.loads(body)
        return doc, doc.get("mediaType") or media_type, digest

    def blob(self, desc: dict, into: pathlib.Path) -> None:
        """Download a blob to a file, checking its size and digest; retries dropped connections."""
        digest = desc["digest"]
        if not DIGEST_RE.match(digest):
            raise RegistryError(f"pulling {self.ref}: the manifest names a bad digest {digest!r}")
        for attempt in range(3):
            h = hashlib.new(digest.split(":")[0])
            try:
                with self.get(f"blobs/{digest}") as r, open(into, "wb") as f:
                    while chunk := r.read(1 << 20):
                        h.update(chunk)
                        f.write(chunk)
                break
            except (ConnectionError, TimeoutError, urllib.error.URLError, http.client.HTTPException) as e:
                if attempt == 2:
                    raise RegistryError(f"pulling {self.ref}: downloading {self.base}/blobs/{digest} "
                                        f"failed three times: {e}") from None
                time.sleep(1 + attempt)
        if f"{digest.split(':')[0]}:{h.hexdigest()}" != digest:
            raise RegistryError(f"pulling {self.ref}: blob {self.base}/blobs/{digest} does not match its "
                                "digest (corrupted in transit or by the registry); try again")


def _hash(digest: str, data: bytes) -> str:
    algo = digest.split(":")[0]
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def _choose_platform(index: dict, ref: str) -> dict:
    arch, variant = ARCHES.get(platform.machine().lower(), (platform.machine().lower(), None))
    candidates = [m for m in index.get("manifests", [])
                  if m.get("platform", {}).get("os") == "linux" and m["platform"].get("architecture") == arch]
    # Prefer our variant (arm64 images mostly say v8 or nothing); else any of our architecture.
    for m in candidates:
        if m["platform"].get("variant") in (variant, None):
            return m
    if candidates:
        return candidates[0]
    offered = sorted({"/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
                      for p in (m.get("platform", {}) for m in index.get("manifests", []))})
    raise RegistryError(f"pulling {ref}: the image has no linux/{arch} variant (it has: {', '.join(offered)}); "
                        "use an image built for this machine's architecture")


def pull(ref: str, dest: pathlib.Path, log: Callable[[str], None], *, insecure: bool | None = None) -> dict:
    """Pull image `ref` and flatten its layers into `dest` (an empty or missing directory).

    insecure: plain HTTP instead of HTTPS; None means only for loopback hosts.
    Returns {"env": {..}, "workdir": str, "entrypoint": [..], "cmd": [..], "user": str,
    "digest": the manifest's digest (pins exactly what was pulled)}.
    """
    host, repo, reference = parse_ref(ref)
    reg = _Registry(ref, host, repo, insecure)
    dest = pathlib.Path(dest).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise RegistryError(f"pulling {ref}: {dest} is not empty; pull into an empty directory")

    manifest, media_type, digest = reg.manifest(reference)
    if media_type in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
        chosen = _choose_platform(manifest, ref)
        manifest, media_type, digest = reg.manifest(chosen["digest"])
    if manifest.get("schemaVersion") != 2 or "layers" not in manifest:
        raise RegistryError(f"pulling {ref}: unsupported manifest type {media_type!r} at {reg.base}/manifests/"
                            f"{reference} (Docker schema 1 images are obsolete; rebuild or re-push the image)")
    layers = manifest["layers"]
    for layer in layers:
        if "zstd" in layer.get("mediaType", ""):
            raise RegistryError(f"pulling {ref}: layer {layer['digest']} is zstd-compressed, which this puller "
                                "does not support; rebuild or re-push the image with gzip layers")
    total = sum(layer.get("size", 0) for layer in layers)
    log(f"pulling {ref} ({len(layers)} layers, {total / 1e6:.1f} MB)")

    # Downloads go beside dest (same filesystem, nothing left in dest) and run a few at a time;
    # layers are applied strictly in order as each one arrives.
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.pull-", dir=dest.parent) as tmp:
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            cfg_path = pathlib.Path(tmp, "config")
            jobs = [pool.submit(reg.blob, manifest["config"], cfg_path)]
            jobs += [pool.submit(reg.blob, layer, pathlib.Path(tmp, f"layer{i}")) for i, layer in enumerate(layers)]
            try:
                jobs[0].result()
                config = json.loads(cfg_path.read_bytes())
                for i, (job, layer) in enumerate(zip(jobs[1:], layers)):
                    job.result()
                    t0 = time.monotonic()
                    _apply_layer(pathlib.Path(tmp, f"layer{i}"), str(dest), f"{ref} layer {layer['digest']}", log)
                    os.unlink(pathlib.Path(tmp, f"layer{i}"))
                    log(f"  layer {i + 1}/{len(layers)} {layer['digest'][7:19]} "
                        f"{layer.get('size', 0) / 1e6:.1f} MB applied in {time.monotonic() - t0:.1f}s")
            except BaseException:
                for job in jobs:
                    job.cancel()
                raise

    c = config.get("config") or {}
    env = dict(e.split("=", 1) if "=" in e else (e, "") for e in c.get("Env") or [])
    return {"env": env, "workdir": c.get("WorkingDir") or "/", "entrypoint": c.get("Entrypoint") or [],
            "cmd": c.get("Cmd") or [], "user": c.get("User") or "", "digest": digest}


# ---- applying a layer ------------------------------------------------------------------------

def _apply_layer(path: pathlib.Path, root: str, what: str, log: Callable[[str], None]) -> None:
    """Apply one layer tar (gzip or not) onto root, the way overlayfs would stack it."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"\x28\xb5\x2f\xfd":
        raise RegistryError(f"{what} is zstd-compressed, which this puller does not support; "
                            "rebuild or re-push the image with gzip layers")
    unpacked: set[str] = set()  # paths this layer wrote: an opaque whiteout keeps them
    dir_times: list[tuple[str, float]] = []
    try:
        with tarfile.open(path, "r|*") as tar:  # stream mode: gzip is decompressed once, in order
            _apply_entries(tar, root, what, log, unpacked, dir_times)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise RegistryError(f"{what} is not a valid (gzipped) tar: {e}; the image is damaged, re-push it") from None
    # Directory times last: creating their entries changed them.
    for d, mtime in reversed(dir_times):
        os.utime(d, (mtime, mtime), follow_symlinks=False)


def _apply_entries(tar: tarfile.TarFile, root: str, what: str, log: Callable[[str], None],
                   unpacked: set[str], dir_times: list[tuple[str, float]]) -> None:
    """Apply a layer's entries in order: whiteouts remove lower content, the rest is created."""
    for m in tar:
        parts = [p for p in m.name.split("/") if p not in ("", ".")]
        if not parts:
            continue  # the layer's root entry itself
        if ".." in parts:
            raise RegistryError(f"{what}: entry {m.name!r} points outside the image; refusing the image")
        name = parts[-1]
        if name.startswith(".wh."):
            try:
                parent = _resolve_dir(root, parts[:-1], what, create=False)
            except RegistryError:
                continue  # nothing below to white out
            if name == ".wh..wh..opq":
                _make_opaque(parent, unpacked)
            elif not name.startswith(".wh..wh."):  # other .wh..wh. names are AUFS bookkeeping
                _remove(os.path.join(parent, name[4:]))
            continue
        target = os.path.join(_resolve_dir(root, parts[:-1], what), name)
        _extract(tar, m, target, root, what, log)
        unpacked.add(target)
        if m.isdir():
            dir_times.append((target, m.mtime))


def _resolve_dir(root: str, parts: list[str], what: str, create: bool = True) -> str:
    """The real path of directory `parts` in root, following symlinks as if root were "/".

    A symlink met on the way (even an absolute one, or one full of '..') is resolved inside root,
    so no entry can land outside it: this is what the container will see after chroot anyway.
    Missing directories are created (layer tars need not list every parent).
    """
    cur, todo, hops = root, list(parts), 0
    while todo:
        p = todo.pop(0)
        if p in ("", "."):
            continue
        if p == "..":
            cur = cur if cur == root else os.path.dirname(cur)  # cur never holds a symlink
            continue
        nxt = os.path.join(cur, p)
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            if not create:
                raise RegistryError(f"{what}: {nxt[len(root):]} does not exist") from None
            os.mkdir(nxt, 0o755)
            cur = nxt
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise RegistryError(f"{what}: too many levels of symlinks under {'/'.join(parts)!r}")
            link = os.readlink(nxt)
            if link.startswith("/"):
                cur = root
            todo = link.split("/") + todo
        elif stat.S_ISDIR(st.st_mode):
            cur = nxt
        else:
            raise RegistryError(f"{what}: {nxt[len(root):]} is not a directory, but the layer puts files under it")
    return cur


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _make_opaque(directory: str, unpacked: set[str]) -> None:
    """Empty a directory of what earlier layers put there (containerd's rule: whatever this layer
    has not unpacked yet), since tars need not list the marker before the directory's entries."""
    for top, dirs, files in os.walk(directory):
        for name in files:
            if os.path.join(top, name) not in unpacked:
                os.unlink(os.path.join(top, name))
        for name in list(dirs):
            p = os.path.join(top, name)
            if p not in unpacked:
                _remove(p)  # also a symlink to a directory, which os.walk lists among dirs
                dirs.remove(name)


def _extract(tar: tarfile.TarFile, m: tarfile.TarInfo, target: str, root: str, what: str,
             log: Callable[[str], None]) -> None:
    """Create one entry at target, replacing what lower layers had there (merging directories)."""
    try:
        existing = os.lstat(target)
    except FileNotFoundError:
        existing = None
    if existing and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
        _remove(target)

    if m.isdir():
        if not existing or not stat.S_ISDIR(existing.st_mode):
            os.mkdir(target, 0o700)
    elif m.isreg():
        src = tar.extractfile(m)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
    elif m.issym():
        os.symlink(m.linkname, target)  # kept verbatim: it is resolved in the container's root
    elif m.islnk():
        lparts = [p for p in m.linkname.split("/") if p not in ("", ".")]
        if ".." in lparts or not lparts:
            raise RegistryError(f"{what}: hardlink {m.name!r} points outside the image ({m.linkname!r})")
        source = os.path.join(_resolve_dir(root, lparts[:-1], what, create=False), lparts[-1])
        os.link(source, target, follow_symlinks=False)
        return  # a hardlink shares its source's inode: metadata is the source's
    elif m.ischr() or m.isblk() or m.isfifo():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
        try:
            os.mknod(target, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
        except PermissionError:  # device nodes need CAP_MKNOD; containers get /dev mounted anyway
            log(f"  skipped device node /{m.name} (not permitted here)")
            return
    else:
        return  # nothing else (e.g. sparse-file metadata) belongs in an image layer

    # Owner before mode: chown clears setuid/setgid bits.
    if os.geteuid() == 0:
        os.chown(target, m.uid, m.gid, follow_symlinks=False)
    if not m.issym():
        os.chmod(target, m.mode & 0o7777)
    for key, value in m.pax_headers.items():  # file capabilities (ping's cap_net_raw) and ACLs
        if key.startswith("SCHILY.xattr."):
            try:
                os.setxattr(target, key[13:], value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError:
                pass  # the filesystem under dest may not take xattrs; the files still work
    if not m.isdir():
        os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
