"""Images: layers built once and cached by content, rebuilt from the changed step, failures that
say which step broke, and every kind of step, on the container backend; layer archives in the blob
store (zstd, or plain tars of older workers) fetched by other workers, and archived after a restart
by a worker stopped before it was done."""

import asyncio
import hashlib
import os
import pathlib
import re
import sqlite3
import subprocess
import sys
import shutil
import uuid

import pytest
import registry as test_registry
from conftest import Cluster, container_backend_missing, run_async, wait_for

import ember
from ember import exception
from ember._client.client import Client
from ember.app import build_image
from ember.proto import api_pb2
from ember.server.scheduler import Scheduler
from ember.server.store import open_store
from ember.worker import disk as disks


def build(image: ember.Image, capsys) -> tuple[str, str]:
    """Build through the control plane; returns (image id, what the build printed)."""
    client = Client.from_env()
    resolved = image._resolve(client.upload_sync)
    capsys.readouterr()
    client.run(build_image(client, resolved))
    return resolved.image_id, capsys.readouterr().err


def built(out: str, i: int, n: int) -> bool:
    """Whether a build's output (piped: a plain line per step) says step i of n was built."""
    return re.search(rf"^\[{i}/{n}\] .*: built in ", out, re.MULTILINE) is not None


def layers_dir() -> pathlib.Path:
    return pathlib.Path(os.environ["EMBER_CACHE_DIR"]) / "layers"


def test_unchanged_steps_are_cached_and_a_changed_step_rebuilds_from_there(container_cluster, capsys):
    token = uuid.uuid4().hex[:8]  # new steps for this run
    base = ember.Image.debian_slim().run_commands(f"echo {token} > /one")
    first, out = build(base.run_commands("echo two > /two"), capsys)
    assert built(out, 2, 3) and built(out, 3, 3), out
    again, out = build(base.run_commands("echo two > /two"), capsys)
    assert again == first and out == ""  # built: nothing to show
    changed, out = build(base.run_commands("echo three > /two"), capsys)
    assert changed != first
    assert f"[2/3] run_commands echo {token} > /one: cached" in out and built(out, 3, 3), out
    forced, out = build(base.run_commands("echo two > /two", force_build=True), capsys)
    assert forced == first and built(out, 3, 3) and not built(out, 2, 3), out


def test_a_failing_step_names_itself_and_caches_nothing(container_cluster, capsys):
    token = uuid.uuid4().hex[:8]
    image = ember.Image.debian_slim().run_commands(f"echo {token} > /ok", f"echo broken-{token}; exit 3")
    with pytest.raises(exception.ImageBuildError) as e:
        build(image, capsys)
    msg = str(e.value)
    assert "step 2/2, run_commands(" in msg
    assert f"`echo broken-{token}; exit 3` failed with exit code 3" in msg and f"broken-{token}" in msg
    layer = image._resolve(lambda data: "").steps[-1].layer_id
    assert not (layers_dir() / layer).exists()
    assert not any(p.name.startswith(layer) for p in (layers_dir() / ".tmp").glob("*/*"))


def test_a_pip_step_prunes_its_workspaces_uv_cache_only(container_cluster, capsys):
    # An archive that no cached wheel refers to, as uv leaves behind: `uv cache prune` removes it
    # from the cache of the workspace that built (the test's token is workspace main's); another
    # workspace's cache is neither used nor touched.
    caches = layers_dir().parent / "uv-cache"
    dangling, others = (caches / ws / "archive-v0" / f"ember-test-{uuid.uuid4().hex}" for ws in ("main", "other"))
    for d in (dangling, others):
        d.mkdir(parents=True)
        (d / "METADATA").write_text("unreferenced")
    token = uuid.uuid4().hex[:8]
    _, out = build(ember.Image.debian_slim().run_commands(f"echo {token} > /token").pip_install("six==1.17.0"), capsys)
    assert "[3/3] pip_install six==1.17.0 ..." in out and built(out, 3, 3), out
    wait_for(lambda: not dangling.exists(), what="the prune after the pip step")  # in the background
    assert others.exists()
    shutil.rmtree(caches / "other")


def test_apt_env_workdir_local_files_and_run_function(container_cluster, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("alpha")
    (tmp_path / "data" / "skip.log").write_text("no")
    (tmp_path / "one.txt").write_text("single")
    (tmp_path / "helper_mod.py").write_text("def hello():\n    return 'from helper'\n")
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    app_file = tmp_path / "steps_app.py"
    app_file.write_text(f'''
import os, subprocess, ember

def make_marker():
    with open("/built-by-function", "w") as f:
        f.write("yes")

image = (ember.Image.debian_slim()
         .apt_install("jq")
         .pip_install_from_requirements({str(tmp_path / "requirements.txt")!r})
         .env({{"GREETING": "hi"}})
         .add_local_dir({str(tmp_path / "data")!r}, "/srv/data", ignore=["*.log"])
         .add_local_file({str(tmp_path / "one.txt")!r}, "/etc/one.txt")
         .add_local_python_source("helper_mod")
         .run_function(make_marker)
         .workdir("/srv"))
app = ember.App("steps")

@app.function(image=image)
def inspect():
    import helper_mod, six
    return {{"six": six.__version__,
             "jq": subprocess.run(["jq", "--version"], capture_output=True, text=True).stdout.strip(),
             "env": os.environ.get("GREETING"), "cwd": os.getcwd(), "data": sorted(os.listdir("/srv/data")),
             "one": open("/etc/one.txt").read(), "helper": helper_mod.hello(),
             "marker": open("/built-by-function").read()}}
''')
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import steps_app\n"
            "with steps_app.app.run():\n    print(steps_app.inspect.remote())")
    proc = subprocess.run([os.sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = eval(proc.stdout.strip().splitlines()[-1])
    assert out["jq"].startswith("jq-")
    assert out == dict(out, six="1.17.0", env="hi", cwd="/srv", data=["a.txt"], one="single", helper="from helper",
                       marker="yes")


def test_a_build_step_sees_its_secrets_which_stay_out_of_the_image(container_cluster, capsys):
    token = uuid.uuid4().hex
    marker = uuid.uuid4().hex[:8]  # a new step for this run

    def image():  # Secret.from_dict makes a new secret at each run: the layer is still reused
        return ember.Image.debian_slim().run_commands(
            f'echo "$BUILD_TOKEN {marker}" > /token', secrets=[ember.Secret.from_dict({"BUILD_TOKEN": token})])

    app = ember.App("build-secrets")

    @app.function(image=image(), serialized=True)
    def read():
        import os
        return open("/token").read().strip(), os.environ.get("BUILD_TOKEN")

    capsys.readouterr()
    with app.run():
        assert read.remote() == (f"{token} {marker}", None)
    assert built(capsys.readouterr().err, 2, 2)
    again = ember.App("build-secrets")
    again.function(image=image(), serialized=True, name="read")(read.get_raw_f())
    with again.run():
        pass
    assert not built(capsys.readouterr().err, 2, 2)
    # No secret of another kind of object: a clear error where it is written.
    with pytest.raises(exception.InvalidError, match="pass a list of ember.Secret"):
        ember.Image.debian_slim().run_commands("true", secrets=["TOKEN=x"])


def test_an_entrypoint_runs_the_runtime_as_in_docker(container_cluster):
    marker = uuid.uuid4().hex[:8]
    with_script = ember.Image.debian_slim().run_commands(
        f"printf '#!/bin/sh\\nexport FROM_ENTRYPOINT={marker}\\nexec \"$@\"\\n' > /entry.sh",
        "chmod +x /entry.sh", "printf '#!/bin/sh\\necho setup only\\n' > /broken.sh", "chmod +x /broken.sh")
    app = ember.App("entrypoint")

    @app.function(image=with_script.entrypoint(["/entry.sh"]), serialized=True)
    def env():
        import os
        return os.environ.get("FROM_ENTRYPOINT")

    @app.function(image=with_script.entrypoint(["/broken.sh"]), serialized=True, retries=0)
    def never():
        return "ran"

    with app.run():
        assert env.remote() == marker
        with pytest.raises(exception.Error) as e:
            never.remote()
        assert "entrypoint" in str(e.value) and 'exec "$@"' in str(e.value), str(e.value)


def test_from_registry_runs_functions_in_a_pulled_image(container_cluster, tmp_path, capsys):
    if test_registry.missing_tools():
        pytest.skip(f"needs {test_registry.missing_tools()}")
    proc, address = test_registry.start_registry(tmp_path)
    try:
        # The image: the Debian base built here, plus a layer with a file of its own.
        build(ember.Image.debian_slim(), capsys)
        base_layer = ember.Image.debian_slim()._resolve(lambda data: "").image_id
        test_registry.push_dir_as_image(layers_dir() / base_layer, address, "team/base", "v1", tmp_path,
                                        extra_layer={"etc/team-marker": b"from the registry"},
                                        config={"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "TEAM=blue"]})
        image = ember.Image.from_registry(f"{address}/team/base:v1")
        app = ember.App("registry")

        @app.function(image=image, serialized=True)
        def marker():
            import os
            return open("/etc/team-marker").read(), os.environ.get("TEAM")

        with app.run():
            assert marker.remote() == ("from the registry", "blue")
    finally:
        proc.terminate()
        proc.wait()


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture
def cold(tmp_path, monkeypatch):
    """A control plane of its own, for tests that start and stop its workers; the test starts them."""
    if container_backend_missing():
        pytest.skip(container_backend_missing())
    c = Cluster(tmp_path)
    c.start_server()
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    yield c
    c.stop()


def layer_ids(image: ember.Image) -> list[str]:
    return [s.layer_id for s in image._resolve(lambda data: "").steps]


def archive_of(c: Cluster, worker: str, layer_id: str) -> pathlib.Path | None:
    """The layer's archive in the control plane's blob store, once the worker logged its upload."""
    m = re.search(rf"layer {layer_id[:12]} archived into the blob store as (\w+)", c.log(f"worker-{worker}"))
    return next((c.tmp / "server" / "blobs").glob(f"??/{m.group(1)}*"), None) if m else None


def wait_for_archives(c: Cluster, worker: str, image: ember.Image) -> list[pathlib.Path]:
    # A worker that stops does not wait for its archives (they stay pending in its cache).
    wait_for(lambda: all(archive_of(c, worker, layer) for layer in layer_ids(image)), timeout=240,
             what="the layers' archives")
    print([line for line in c.log(f"worker-{worker}").splitlines() if "archived into" in line])
    return [archive_of(c, worker, layer) for layer in layer_ids(image)]


def token_app(image: ember.Image):
    app = ember.App("fetch")

    @app.function(image=image, serialized=True)
    def read_token():
        return open("/token").read().strip()

    return app, read_token


def fetched_by_a_fresh_worker(c: Cluster, tmp_path, image: ember.Image, token: str):
    """A worker with an empty cache runs a function on the image by fetching its layers, building none."""
    c.start_worker(name="w2", backend="container", **{"cache-dir": str(tmp_path / "cache2")})
    app, read_token = token_app(image)
    with app.run():
        assert read_token.remote() == token
    assert (tmp_path / "cache2" / "layers" / layer_ids(image)[-1]).is_dir()
    log = c.log("worker-w2")
    assert "fetching layer 1/2" in log and "fetching layer 2/2" in log and "=> step" not in log


def test_a_second_worker_fetches_layers_instead_of_building(cold, tmp_path, capsys):
    first = cold.start_worker(name="w1", backend="container")  # the shared test cache
    token = uuid.uuid4().hex[:8]
    image = ember.Image.debian_slim().run_commands(f"echo {token} > /token")
    _, out = build(image, capsys)
    assert built(out, 2, 2), out
    for archive in wait_for_archives(cold, "w1", image):
        with archive.open("rb") as f:
            assert f.read(4) == ZSTD_MAGIC, archive  # zstd-compressed tars
    first.terminate()
    first.wait()
    fetched_by_a_fresh_worker(cold, tmp_path, image, token)


def test_a_plain_tar_archive_of_an_older_worker_is_fetched_and_unpacked(cold, tmp_path, capsys):
    first = cold.start_worker(name="w1", backend="container")
    token = uuid.uuid4().hex[:8]
    image = ember.Image.debian_slim().run_commands(f"echo {token} > /token")
    build(image, capsys)
    wait_for_archives(cold, "w1", image)
    first.terminate()
    first.wait()
    # The top layer's archive as workers made it before compression: a plain tar, put into the
    # blob store under its hash and recorded as the layer's archive.
    layer = layer_ids(image)[-1]
    plain = subprocess.run(["tar", "-C", str(layers_dir() / layer), "--xattrs", "--xattrs-include=*",
                            "--numeric-owner", "-cf", "-", "."], capture_output=True, check=True).stdout
    assert not plain.startswith(ZSTD_MAGIC)
    blob_id = hashlib.sha256(plain).hexdigest()
    (cold.tmp / "server" / "blobs" / blob_id[:2]).mkdir(exist_ok=True)
    (cold.tmp / "server" / "blobs" / blob_id[:2] / blob_id).write_bytes(plain)
    cold.server.terminate()
    cold.server.wait()
    db = sqlite3.connect(cold.tmp / "server" / "ember.db")
    with db:
        assert db.execute("UPDATE layers SET blob_id=? WHERE layer_id=?", (blob_id, layer)).rowcount == 1
    db.close()
    cold.start_server()
    fetched_by_a_fresh_worker(cold, tmp_path, image, token)


def test_a_worker_stopped_before_archiving_archives_at_its_next_start(cold, tmp_path, capsys):
    # A zstd that never finishes while tar lives (tar runs it, maybe through `sh -c`: it ends when
    # its parent or grandparent does): the worker stops while its archives are under way.
    stuck = tmp_path / "stuck-zstd"
    stuck.mkdir()
    (stuck / "zstd").write_text("#!/bin/sh\ngrandparent=$(cut -d' ' -f4 /proc/$PPID/stat)\n"
                                "while kill -0 $PPID && kill -0 $grandparent; do sleep 0.1; done 2>/dev/null\n")
    (stuck / "zstd").chmod(0o755)
    first = cold.start_worker(name="w1", backend="container",
                              env={"PATH": f"{stuck}:{os.environ['PATH']}"})
    token = uuid.uuid4().hex[:8]
    image = ember.Image.debian_slim().run_commands(f"echo {token} > /token")
    build(image, capsys)
    first.terminate()  # right after a build: the image's spare container may be starting
    first.wait()
    assert "archived into" not in cold.log("worker-w1")
    assert not disks.mounts_under(tmp_path / "w1"), "the stopped worker left a disk mounted"
    pending = layers_dir() / ".pending" / (tmp_path / "w1" / "worker_id").read_text().strip()
    assert sorted(p.name for p in pending.iterdir()) == sorted(layer_ids(image))
    # Another worker that shares the cache (of another control plane, here) leaves them alone:
    # they are w1's to archive, for its control plane.
    (tmp_path / "other").mkdir()
    other = Cluster(tmp_path / "other")
    try:
        other.start_server()
        other.start_worker(name="elsewhere", backend="container")
        wait_for(lambda: "registered with" in other.log("worker-elsewhere"), what="the other worker to register")
    finally:
        other.stop()
    assert "left pending" not in other.log("worker-elsewhere")
    # Started again (its own zstd now), it archives both layers, and the control plane hears of them.
    cold.start_worker(name="w1", backend="container")
    wait_for_archives(cold, "w1", image)
    assert cold.log("worker-w1").count("which was left pending when a worker stopped") == 2
    wait_for(lambda: not pending.exists(), what="its pending marks to go")
    app, read_token = token_app(image)
    with app.run():
        assert read_token.remote() == token
        # `ember image list`: the image with both layers, their unpacked and archived sizes.
        listing = subprocess.run([sys.executable, "-m", "ember.cli.main", "image", "list"], capture_output=True,
                                 text=True, timeout=60)
        print(listing.stdout)
        line, = [x for x in listing.stdout.splitlines() if "fetch.read_token" in x]
        image_id, layers, unpacked, archived, _functions = line.split("\t")
        assert image_id == layer_ids(image)[-1][:12] and layers == "2 layers", line
        assert float(unpacked.split()[0]) > 100 and 10 < float(archived.split()[0]) < float(unpacked.split()[0])


def test_process_backend_runs_an_image_in_its_own_venv(cluster, capsys):
    """Where containers are unavailable, an image's packages go into a virtual environment (not
    the worker's own, which may have six too: botocore needs it)."""
    app = ember.App("venv")
    image = ember.Image.debian_slim().pip_install("six==1.17.0").env({"MODE": "venv"})

    @app.function(image=image, serialized=True)
    def where_is_six():
        import os
        import sys

        import six
        return six.__version__, six.__file__, sys.prefix, os.environ["MODE"]

    with app.run():
        version, path, prefix, mode = where_is_six.remote()
    assert version == "1.17.0" and mode == "venv" and "venvs" in prefix and path.startswith(prefix + "/")
    with pytest.raises(exception.ImageBuildError, match="needs the container backend"):
        build(ember.Image.debian_slim().apt_install("jq"), capsys)


def test_image_declarations_are_checked_where_they_are_written(tmp_path):
    with pytest.raises(exception.InvalidError, match=r"Python 3\.11"):
        ember.Image.debian_slim(python_version="3.9")
    with pytest.raises(exception.InvalidError, match="not a non-empty string"):
        ember.Image.debian_slim().pip_install("numpy", 3)
    with pytest.raises(exception.InvalidError, match="pass an ember.Image"):
        ember.App("x").function(image="python:3.11")
    with pytest.raises(exception.InvalidError, match="dict of string names"):
        ember.Image.debian_slim().env({"A": 1})
    # Local files are looked at when the image is resolved (a container re-imports the module
    # without them); a missing one is an error there, naming it.
    image = ember.Image.debian_slim().add_local_dir(tmp_path / "nope", "/data")
    with pytest.raises(exception.InvalidError, match="nope is not a directory"):
        image._resolve(lambda data: "")
    # The same steps name the same layers; content changes the name.
    (tmp_path / "f.txt").write_text("one")
    a = ember.Image.debian_slim().add_local_file(tmp_path / "f.txt", "/f.txt")._resolve(lambda data: "")
    b = ember.Image.debian_slim().add_local_file(tmp_path / "f.txt", "/f.txt")._resolve(lambda data: "")
    (tmp_path / "f.txt").write_text("two")
    c = ember.Image.debian_slim().add_local_file(tmp_path / "f.txt", "/f.txt")._resolve(lambda data: "")
    assert a.image_id == b.image_id != c.image_id and a.steps[0].layer_id == c.steps[0].layer_id


@run_async
async def test_an_archive_reported_before_another_builds_report_of_its_layer_stays_known(tmp_path):
    """Two workers build images that share a layer: one reports its archive before the other
    reports the layer as usable on it (with no archive yet). The archive stays the layer's."""
    store = open_store(tmp_path / "ember.db")
    sched = Scheduler(store, lease_timeout=5, worker_timeout=5, app_timeout=5, output_retention=3600)
    shared, top, blob_id = "a" * 64, "c" * 64, "b" * 64
    base = api_pb2.ImageStep(kind=api_pb2.ImageStep.DEBIAN_SLIM, args=["bookworm", "3.11"], layer_id=shared)
    images = [api_pb2.Image(image_id=shared, steps=[base]),
              api_pb2.Image(image_id=top, steps=[base, api_pb2.ImageStep(kind=api_pb2.ImageStep.RUN_COMMANDS,
                                                                       args=["true"], layer_id=top)])]
    workers, builds = [], []
    for name, image in zip(("w1", "w2"), images):
        sent = []
        workers.append(sched.fleet.worker_connected(api_pb2.WorkerRegister(worker_id=f"wk-{name}", name=name, cpu=1,
                                                                           memory_mb=512), sent.append, "tk-1"))
        if name == "w2":
            sched.fleet.drain("w1")  # the second build goes to the second worker
        builds.append(asyncio.create_task(anext(sched.builds.follow(image, False, "main"))))
        await asyncio.sleep(0)
        assert [m.build_image.image.image_id for m in sent] == [image.image_id]
    sched.builds.on_layer(api_pb2.LayerBuilt(layer=api_pb2.Layer(layer_id=shared, blob_id=blob_id, size=9)),
                          workers[0])
    sched.builds.on_layer(api_pb2.LayerBuilt(layer=api_pb2.Layer(layer_id=shared, size=9)), workers[1])
    assert [x.blob_id for x in sched.builds.known(images[1])] == [blob_id]
    for b in builds:
        b.cancel()
    await store.durable()
    assert store.layers() == {shared: blob_id}
    store.close()
