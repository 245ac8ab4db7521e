"""Pulling images from a real local registry (Debian's docker-registry) into a root filesystem."""

import base64
import http.server
import json
import os
import pathlib
import socket
import stat
import threading
import urllib.parse
import urllib.request

import pytest

from ember.worker.registry import RegistryError, parse_ref, pull
from registry import missing_tools, push_dir_as_image, start_registry  # tests/registry.py

ROOT = os.geteuid() == 0

CONFIG = {"Env": ["PATH=/usr/bin:/bin", "GREETING=hello=world"], "WorkingDir": "/app",
          "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]}
EXTRA = {
    "etc/removed": None,                # whiteout of a file of the first layer
    "etc/hostname": b"changed\n",       # replaces a file of the first layer
    "opq/c": b"c",                      # written before its directory's opaque marker: must stay
    "opq/.wh..wh..opq": b"",            # empties opq/ of the first layer's a and sub/b
    "new/deep/file": b"new",            # parents not listed in the tar
}


def make_rootfs(d: pathlib.Path) -> pathlib.Path:
    (d / "bin").mkdir(parents=True)
    (d / "bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (d / "bin/tool").chmod(0o755)
    os.link(d / "bin/tool", d / "bin/tool2")
    (d / "bin/suid").write_bytes(b"x")
    (d / "etc").mkdir()
    (d / "etc/hostname").write_text("base\n")
    (d / "etc/removed").write_text("gone soon\n")
    (d / "etc/secret").write_text("s3cret\n")
    (d / "etc/secret").chmod(0o600)
    (d / "opq/sub").mkdir(parents=True)
    (d / "opq/a").write_text("a")
    (d / "opq/sub/b").write_text("b")
    (d / "var/empty").mkdir(parents=True, mode=0o700)
    (d / "var/empty").chmod(0o1777)
    os.symlink("../etc/hostname", d / "bin/rel-link")
    os.symlink("/etc/hostname", d / "abs-link")
    if ROOT:
        os.chown(d / "etc/secret", 1000, 1001)
        os.chown(d / "bin/suid", 0, 0)
    (d / "bin/suid").chmod(0o4755)
    return d


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if missing_tools():
        pytest.skip(f"needs Debian packages {missing_tools()} (apt-get install -y {' '.join(missing_tools())})")
    tmp = tmp_path_factory.mktemp("registry")
    proc, addr = start_registry(tmp)
    try:
        push_dir_as_image(make_rootfs(tmp / "rootfs"), addr, "test/base", "1", tmp, EXTRA, config=CONFIG)
        yield addr, tmp
    finally:
        proc.terminate()
        proc.wait(10)


def test_parse_ref():
    assert parse_ref("python:3.11") == ("registry-1.docker.io", "library/python", "3.11")
    assert parse_ref("python") == ("registry-1.docker.io", "library/python", "latest")
    assert parse_ref("docker.io/pytorch/pytorch") == ("registry-1.docker.io", "pytorch/pytorch", "latest")
    assert parse_ref("127.0.0.1:5000/x/y:t") == ("127.0.0.1:5000", "x/y", "t")
    assert parse_ref("localhost/x") == ("localhost", "x", "latest")
    assert parse_ref("ghcr.io/org/img:v1.2-rc") == ("ghcr.io", "org/img", "v1.2-rc")
    digest = "sha256:" + "ab" * 32
    assert parse_ref(f"host.example/x@{digest}") == ("host.example", "x", digest)
    assert parse_ref(f"host.example:443/x:tag@{digest}") == ("host.example:443", "x", digest)
    for bad in ("Upper/Case", "x@sha256:short", "x:bad tag"):
        with pytest.raises(RegistryError, match="bad"):
            parse_ref(bad)


def test_pull_flattens_layers_and_returns_config(registry, tmp_path):
    addr, _ = registry
    lines = []
    cfg = pull(f"{addr}/test/base:1", tmp_path / "root", lines.append)
    r = tmp_path / "root"

    assert cfg["env"] == {"PATH": "/usr/bin:/bin", "GREETING": "hello=world"}
    assert (cfg["workdir"], cfg["entrypoint"], cfg["cmd"]) == ("/app", ["/bin/sh", "-c"], ["echo hi"])
    assert cfg["digest"].startswith("sha256:")
    assert lines[0].startswith(f"pulling {addr}/test/base:1 (2 layers, ")

    # The first layer's content, modes, links and owners.
    assert (r / "bin/tool").read_bytes() == b"#!/bin/sh\necho tool\n"
    assert stat.S_IMODE((r / "bin/tool").stat().st_mode) == 0o755
    assert (r / "bin/tool").stat().st_ino == (r / "bin/tool2").stat().st_ino
    assert stat.S_IMODE((r / "bin/suid").stat().st_mode) == 0o4755
    assert stat.S_IMODE((r / "etc/secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((r / "var/empty").stat().st_mode) == 0o1777
    assert os.readlink(r / "bin/rel-link") == "../etc/hostname"
    assert os.readlink(r / "abs-link") == "/etc/hostname"  # verbatim: it resolves inside the container
    if ROOT:
        assert ((r / "etc/secret").stat().st_uid, (r / "etc/secret").stat().st_gid) == (1000, 1001)

    # The second layer on top: a replaced file, a whiteout, an opaque directory, new parents.
    assert (r / "etc/hostname").read_text() == "changed\n"
    assert not (r / "etc/removed").exists() and not (r / "etc/.wh.removed").exists()
    assert sorted(os.listdir(r / "opq")) == ["c"]
    assert (r / "new/deep/file").read_bytes() == b"new"
    # Nothing of the pull's downloads is left beside the root.
    assert os.listdir(tmp_path) == ["root"]


def test_missing_tag_or_repository(registry, tmp_path):
    addr, _ = registry
    for ref in (f"{addr}/test/base:nope", f"{addr}/test/nothing:1"):
        with pytest.raises(RegistryError) as e:
            pull(ref, tmp_path / "root", lambda _: None)
        assert ref in str(e.value) and "404" in str(e.value)


def test_unreachable_registry(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(RegistryError, match=f"http://127.0.0.1:{port}/v2/x/y/manifests/1.*refused"):
        pull(f"127.0.0.1:{port}/x/y:1", tmp_path / "root", lambda _: None)


def test_https_to_a_plain_http_registry_suggests_insecure(registry, tmp_path):
    addr, _ = registry
    with pytest.raises(RegistryError, match=f"https://{addr}/.*insecure=True"):
        pull(f"{addr}/test/base:1", tmp_path / "root", lambda _: None, insecure=False)


def test_symlinks_cannot_lead_outside_dest(registry, tmp_path):
    addr, tmp = registry
    outside = tmp_path / "outside"
    outside.mkdir()
    rootfs = tmp_path / "evil-rootfs"
    rootfs.mkdir()
    os.symlink(str(outside), rootfs / "escape")        # absolute, pointing at a real host directory
    os.symlink("../../../../../../..", rootfs / "up")  # climbs above the root
    push_dir_as_image(rootfs, addr, "test/evil", "1", tmp, {"escape/pwned": b"x", "up/tmp/pwned2": b"y"})
    pull(f"{addr}/test/evil:1", tmp_path / "root", lambda _: None)
    assert not (outside / "pwned").exists() and not pathlib.Path("/tmp/pwned2").exists()
    # Both land where the container will see them: the links resolved inside the root.
    assert (tmp_path / "root" / str(outside).lstrip("/") / "pwned").read_bytes() == b"x"
    assert (tmp_path / "root/tmp/pwned2").read_bytes() == b"y"


def test_dotdot_entries_are_refused(registry, tmp_path):
    addr, tmp = registry
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    push_dir_as_image(rootfs, addr, "test/dotdot", "1", tmp, {"../evil": b"x"})
    with pytest.raises(RegistryError, match="outside the image"):
        pull(f"{addr}/test/dotdot:1", tmp_path / "d/root", lambda _: None)
    assert not (tmp_path / "d/evil").exists()


def test_index_picks_this_machines_platform(registry, tmp_path):
    addr, tmp = registry
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "RIGHT-PLATFORM").write_text("yes")
    push_dir_as_image(rootfs, addr, "test/multi", "1", tmp, index=True)
    pull(f"{addr}/test/multi:1", tmp_path / "root", lambda _: None)
    assert sorted(os.listdir(tmp_path / "root")) == ["RIGHT-PLATFORM"]


class TokenAuthProxy(http.server.BaseHTTPRequestHandler):
    """A registry front that demands Docker Hub's token flow and redirects blobs to a 'CDN'."""
    upstream = ""
    token = "tok-123"
    basic = "Basic " + base64.b64encode(b"alice:secret").decode()

    def do_GET(self):
        here = f"http://127.0.0.1:{self.server.server_address[1]}"
        auth = self.headers.get("Authorization")
        if self.path.startswith("/token"):
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            ok = auth == self.basic and q == {"service": ["test-registry"], "scope": ["repository:test/base:pull"]}
            self.reply(200 if ok else 401, json.dumps({"token": self.token} if ok else {}).encode())
        elif self.path.startswith("/cdn/"):
            # The registry's token must not follow the redirect to another service.
            self.forward(self.path[4:]) if auth is None else self.reply(400, b"two kinds of auth")
        elif auth != f"Bearer {self.token}":
            self.reply(401, b'{"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}', {
                "WWW-Authenticate": f'Bearer realm="{here}/token",service="test-registry",'
                                    'scope="repository:test/base:pull"'})
        elif "/blobs/" in self.path:
            self.reply(307, b"", {"Location": f"{here}/cdn{self.path}"})
        else:
            self.forward(self.path)

    def forward(self, path):
        req = urllib.request.Request(self.upstream + path, headers={"Accept": self.headers.get("Accept", "*/*")})
        with urllib.request.urlopen(req) as r:
            self.reply(r.status, r.read(), {"Content-Type": r.headers["Content-Type"]})

    def reply(self, code, body, headers=None):
        self.send_response(code)
        for k, v in ((headers or {}) | {"Content-Length": str(len(body))}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_token_auth_flow(registry, tmp_path, monkeypatch):
    addr, _ = registry
    handler = type("Proxy", (TokenAuthProxy,), {"upstream": f"http://{addr}"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = f"127.0.0.1:{server.server_address[1]}"
    try:
        # Without credentials the token service refuses, and the error says what to set.
        monkeypatch.delenv("REGISTRY_USERNAME", raising=False)
        with pytest.raises(RegistryError, match=f"{proxy}/test/base:1.*/token.*REGISTRY_USERNAME"):
            pull(f"{proxy}/test/base:1", tmp_path / "anon", lambda _: None)
        monkeypatch.setenv("REGISTRY_USERNAME", "alice")
        monkeypatch.setenv("REGISTRY_PASSWORD", "secret")
        cfg = pull(f"{proxy}/test/base:1", tmp_path / "root", lambda _: None)
        assert cfg["workdir"] == "/app"
        assert (tmp_path / "root/etc/hostname").read_text() == "changed\n"
    finally:
        server.shutdown()
        server.server_close()


def test_zstd_layer_is_refused_clearly(registry, tmp_path):
    addr, tmp = registry
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    push_dir_as_image(rootfs, addr, "test/zstd", "1", tmp, {"f": b"x"}, extra_compression="zstd")
    with pytest.raises(RegistryError, match=f"{addr}/test/zstd:1.*zstd.*gzip"):
        pull(f"{addr}/test/zstd:1", tmp_path / "root", lambda _: None)
