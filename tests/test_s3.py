"""The control plane on an S3-compatible blob store (SeaweedFS, `--blob-url s3://...`): large
arguments and results, image layers and volume files move between the bucket and clients or
workers through presigned URLs, not through the control plane's process; and a workspace is
handed URLs only for blobs it put, as BlobGet reads it only those."""

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid

import grpc
import pytest

from conftest import APPS, PY, ROOT, Cluster, container_backend_missing, wait_for
from services import http, seaweedfs

from ember._client.auth import metadata
from ember._layers import name_layers
from ember.proto import api_pb2, api_pb2_grpc

MB = 1 << 20
RELAYED = "passed through the control plane"


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory):
    """A control plane on a bucket of SeaweedFS; each test starts the workers it needs."""
    s3 = seaweedfs()
    blob_url = s3.new_blob_url()
    c = Cluster(tmp_path_factory.mktemp("s3"))
    old = {key: os.environ.get(key) for key in [*s3.env, "EMBER_SERVER_URL", "EMBER_TOKEN_ID", "EMBER_TOKEN_SECRET"]}
    os.environ.update(s3.env)  # for the control plane it starts (clients and workers need none of it)
    try:
        c.start_server(["--blob-url", blob_url])
        for key in s3.env:
            os.environ.pop(key)
        os.environ.update(c.env)
        yield c, s3, blob_url
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        c.stop()


def stop_workers(c: Cluster):
    for w in c.workers:
        w.terminate()
    for w in c.workers:
        w.wait(30)
    c.workers.clear()


def relayed(c: Cluster) -> list[str]:
    """The blobs whose bytes passed through the control plane (it logs each, on an S3 store)."""
    return re.findall(rf"of blob (\w+) {RELAYED}", c.log())


def keys(s3, blob_url: str) -> set[str]:
    """The blob ids in the control plane's part of the bucket."""
    bucket, _, prefix = blob_url[len("s3://"):].partition("/")
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return {obj["Key"].rsplit("/", 1)[1] for page in pages for obj in page.get("Contents", [])}


def layer_blobs(c: Cluster) -> set[str]:
    db = sqlite3.connect(f"file:{c.tmp / 'server' / 'ember.db'}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT blob_id FROM layers WHERE blob_id != ''")}
    finally:
        db.close()


def app_module(tmp, token: str, container: bool):
    """An app; for the container backend, one whose function reads a volume file, in an image with
    a layer of its own (built here, so archived into this bucket)."""
    path = tmp / f"s3_app_{token}.py"
    if container:
        options = f"image=ember.Image.debian_slim().run_commands('echo {token} > /token'), volumes={{'/data': vol}}"
        body = "return open('/data/in.bin', 'rb').read() + data[::-1]"
    else:
        options, body = "", "return data[::-1]"
    path.write_text(f"""
import ember

app = ember.App("s3-tests")
vol = ember.Volume.from_name("s3-vol-{token}", create_if_missing=True)


@app.function({options})
def transform(data: bytes) -> bytes:
    {body}
""")
    sys.path.insert(0, str(tmp))
    try:
        return __import__(path.stem)
    finally:
        sys.path.remove(str(tmp))


def put_volume_file(mod, tmp, content: bytes):
    (tmp / "in.bin").write_bytes(content)
    with mod.vol.batch_upload() as batch:
        batch.put_file(str(tmp / "in.bin"), "/in.bin")


class Raw:
    """Blob RPCs as the holder of a token."""

    def __init__(self, url: str, token_id: str, secret: str):
        self.channel = grpc.insecure_channel(url)
        self.md = metadata((token_id, secret))
        self.stub = api_pb2_grpc.ClientApiStub(self.channel)

    def code(self, name, request) -> grpc.StatusCode | None:
        try:
            reply = getattr(self.stub, name)(request, metadata=self.md, timeout=30)
            if name == "BlobGet":
                list(reply)
        except grpc.RpcError as e:
            return e.code()
        return None

    def url(self, blob_id: str, upload=False) -> api_pb2.BlobUrlResponse:
        return self.stub.BlobUrl(api_pb2.BlobUrlRequest(blob_id=blob_id, upload=upload), metadata=self.md, timeout=30)

    def exists(self, blob_id: str) -> bool:
        return self.stub.BlobExists(api_pb2.BlobRef(blob_id=blob_id), metadata=self.md, timeout=30).exists


def test_large_payloads_and_volume_files_bypass_the_control_plane(s3_cluster, tmp_path):
    c, s3, blob_url = s3_cluster
    c.start_worker(name="w1")
    try:
        mod = app_module(tmp_path, uuid.uuid4().hex[:8], container=False)
        stored, arg = os.urandom(3 * MB), os.urandom(5 * MB)  # each above the inline limit (2 MiB)
        before = keys(s3, blob_url)
        put_volume_file(mod, tmp_path, stored)
        with mod.app.run():
            assert mod.transform.remote(arg) == arg[::-1]
        new = keys(s3, blob_url) - before
        # The volume file, the argument and the result (and the app's code) are in the bucket, and
        # none passed through the control plane: not from the client, nor from the function's
        # process reading its argument and writing its result.
        assert hashlib.sha256(stored).hexdigest() in new and len(new) >= 3, new
        assert b"".join(mod.vol.read_file("in.bin")) == stored
        assert relayed(c) == []
        # What the check looks for: a blob read through the control plane is logged.
        admin = Raw(c.url, c.env["EMBER_TOKEN_ID"], c.env["EMBER_TOKEN_SECRET"])
        some = hashlib.sha256(stored).hexdigest()
        assert admin.code("BlobGet", api_pb2.BlobRef(blob_id=some)) is None
        wait_for(lambda: some in relayed(c), what="the relayed read in the log")
    finally:
        stop_workers(c)


def test_image_layers_move_between_workers_through_the_bucket(s3_cluster, tmp_path):
    why = container_backend_missing()
    if why:
        pytest.skip(f"container backend unavailable: {why}")
    c, s3, blob_url = s3_cluster
    try:
        c.start_worker(name="builder", backend="container")  # the shared test cache: layers built before
        mod = app_module(tmp_path, uuid.uuid4().hex[:8], container=True)
        put_volume_file(mod, tmp_path, b"stored ")
        with mod.app.run():
            assert mod.transform.remote(b"a") == b"stored a"
        # The builder archives the base layer and the app's own into the bucket.
        wait_for(lambda: len(layer_blobs(c)) >= 2 and layer_blobs(c) <= keys(s3, blob_url), timeout=120,
                 what="the layers' archives in the bucket")
        stop_workers(c)
        # A worker with an empty cache runs it from those archives.
        c.start_worker(name="cold", backend="container", env={"EMBER_CACHE_DIR": str(tmp_path / "cold-cache")})
        with mod.app.run():
            assert mod.transform.remote(b"b") == b"stored b"
        log = c.log("worker-cold")
        fetched = re.findall(r"layer \w+ fetched from the blob store \((\w+)\)", log)
        assert len(fetched) >= 2 and "archived into the blob store" not in log, log[-3000:]
        # Nor did the layers or the volume file (which each worker fetched to mount) pass through.
        layers = layer_blobs(c)
        assert not [b for b in relayed(c) if b in layers or b == hashlib.sha256(b"stored ").hexdigest()], relayed(c)
        # (Its containers may not reach this machine's own addresses, this test's SeaweedFS among
        # them: they move their blobs, here a small code package, through the control plane.)
        print(f"fetched {len(fetched)} layers from the bucket; relayed through the control plane: "
              f"{len(relayed(c))} blobs")
    finally:
        stop_workers(c)


def cli(env, *args):
    out = subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(APPS), **env))
    assert out.returncode == 0, out.stderr
    return out


def test_a_workspace_gets_urls_only_for_its_own_blobs(s3_cluster, tmp_path):
    c, s3, blob_url = s3_cluster
    a = Raw(c.url, c.env["EMBER_TOKEN_ID"], c.env["EMBER_TOKEN_SECRET"])
    cli(c.env, "workspace", "create", "other")
    t = json.loads(cli(c.env, "token", "new", "--workspace", "other", "--json").stdout)
    b = Raw(c.url, t["token_id"], t["token_secret"])
    # A's large argument and result, put by A's client and A's function, and the layers of before.
    c.start_worker(name="w1")
    try:
        mod = app_module(tmp_path, "tenant", container=False)
        put_volume_file(mod, tmp_path, b"a's volume file")
        before = keys(s3, blob_url)
        with mod.app.run():
            result = mod.transform.remote(os.urandom(3 * MB))
    finally:
        stop_workers(c)
    layers = layer_blobs(c)
    a_blobs = keys(s3, blob_url) - before - layers
    assert a_blobs and len(result) == 3 * MB

    for blob_id in sorted(a_blobs | layers):  # no URL, no read, and not even told it exists
        assert b.code("BlobUrl", api_pb2.BlobUrlRequest(blob_id=blob_id)) == grpc.StatusCode.NOT_FOUND
        assert b.code("BlobGet", api_pb2.BlobRef(blob_id=blob_id)) == grpc.StatusCode.NOT_FOUND
        assert not b.exists(blob_id)
    for blob_id in sorted(layers):  # a layer is its workers' business: no workspace reads its archive
        assert a.code("BlobUrl", api_pb2.BlobUrlRequest(blob_id=blob_id)) is None  # (but an admin may)
        assert b.code("BlobUrl", api_pb2.BlobUrlRequest(blob_id=blob_id)) == grpc.StatusCode.NOT_FOUND
    # B may ask to upload A's blob, but the store takes only its bytes, and the control plane
    # then still does not count B as having put it.
    victim = sorted(a_blobs)[0]
    put = b.url(victim, upload=True)
    assert put.url and http(put.url, b"not the content", dict(put.headers))[0] >= 400
    assert not b.exists(victim) and b.code("BlobUrl", api_pb2.BlobUrlRequest(blob_id=victim))

    # Nor may B name A's blob where a worker would fetch it for B: a volume's file, a function's
    # code, an image's files.
    vol = b.stub.ObjectGet(api_pb2.ObjectGetRequest(kind=api_pb2.OBJECT_KIND_VOLUME, name="b-vol",
                                                    create_if_missing=True), metadata=b.md, timeout=30).object_id
    commit = api_pb2.VolumeCommitRequest(volume_id=vol, files=[api_pb2.VolumeFile(path="stolen", blob_id=victim)])
    assert b.code("VolumeCommit", commit) == grpc.StatusCode.NOT_FOUND
    app_id = b.stub.AppCreate(api_pb2.AppCreateRequest(name="thief"), metadata=b.md, timeout=30).app_id
    definition = api_pb2.FunctionDefinition(name="f", module="m", qualname="f", code_blob_id=victim,
                                            resources=api_pb2.Resources(cpu=0.1, memory_mb=64))
    assert b.code("FunctionCreate", api_pb2.FunctionCreateRequest(app_id=app_id, definition=definition)) == \
        grpc.StatusCode.NOT_FOUND
    Step = api_pb2.ImageStep
    image = api_pb2.Image(steps=[Step(kind=Step.DEBIAN_SLIM), Step(kind=Step.ADD_LOCAL, path="/x", blob_id=victim)])
    name_layers(image, "other")
    with pytest.raises(grpc.RpcError) as refused:
        list(b.stub.ImageBuild(api_pb2.ImageBuildRequest(image=image), metadata=b.md, timeout=30))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND, refused.value
    # ... while its own blob, once put, goes in.
    mine = hashlib.sha256(b"b's own").hexdigest()
    put = b.url(mine, upload=True)
    assert http(put.url, b"b's own", dict(put.headers))[0] == 200 and b.exists(mine)
    commit = api_pb2.VolumeCommitRequest(volume_id=vol, files=[api_pb2.VolumeFile(path="own", blob_id=mine, size=7)])
    assert b.code("VolumeCommit", commit) is None

    # A's own: a URL that works, and fails once tampered with.
    own = sorted(a_blobs)[-1]
    url = a.url(own).url
    status, body = http(url)
    assert status == 200 and hashlib.sha256(body).hexdigest() == own
    assert http(url.replace("X-Amz-Signature=", "X-Amz-Signature=f"))[0] == 403
    assert http(url.replace(own, victim if victim != own else "0" * 64))[0] == 403
    assert http(re.sub(r"X-Amz-Expires=\d+", "X-Amz-Expires=604800", url))[0] == 403
    assert a.code("BlobUrl", api_pb2.BlobUrlRequest(blob_id="../" + own[3:])) == grpc.StatusCode.INVALID_ARGUMENT
