"""Images: layers built once and cached by content, rebuilt from the changed step, failures that
say which step broke, and every kind of step, on the container backend."""

import os
import pathlib
import subprocess
import uuid

import pytest
import registry as test_registry
from conftest import Cluster, container_backend_missing, wait_for

import ember
from ember import exception
from ember._client.client import Client
from ember.app import build_image


def build(image: ember.Image, capsys) -> tuple[str, str]:
    """Build through the control plane; returns (image id, what the build printed)."""
    client = Client.from_env()
    resolved = image._resolve(client.upload_sync)
    capsys.readouterr()
    client.run(build_image(client, resolved))
    return resolved.image_id, capsys.readouterr().err


def layers_dir() -> pathlib.Path:
    return pathlib.Path(os.environ["EMBER_CACHE_DIR"]) / "layers"


def test_unchanged_steps_are_cached_and_a_changed_step_rebuilds_from_there(container_cluster, capsys):
    token = uuid.uuid4().hex[:8]  # new steps for this run
    base = ember.Image.debian_slim().run_commands(f"echo {token} > /one")
    first, out = build(base.run_commands("echo two > /two"), capsys)
    assert "=> step 2/3" in out and "=> step 3/3" in out
    again, out = build(base.run_commands("echo two > /two"), capsys)
    assert again == first and "=> step" not in out
    changed, out = build(base.run_commands("echo three > /two"), capsys)
    assert changed != first
    assert "=> step 2/3" not in out and "=> step 3/3" in out
    forced, out = build(base.run_commands("echo two > /two", force_build=True), capsys)
    assert forced == first and "=> step 3/3" in out and "=> step 2/3" not in out


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


def test_a_second_worker_fetches_layers_instead_of_building(tmp_path, monkeypatch, capsys):
    if container_backend_missing():
        pytest.skip(container_backend_missing())
    c = Cluster(tmp_path)
    c.start_server()
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    try:
        first = c.start_worker(name="w1", backend="container")  # the shared test cache
        token = uuid.uuid4().hex[:8]
        image = ember.Image.debian_slim().run_commands(f"echo {token} > /token")
        _, out = build(image, capsys)
        assert "=> step 2/2" in out
        # A worker that stops does not wait for its archives (they stay pending in its cache):
        # wait until both layers are in the blob store.
        wait_for(lambda: c.log("worker-w1").count("archived into the blob store") >= 2, timeout=240,
                 what="the layers' archives")
        print([line for line in c.log("worker-w1").splitlines() if "archived into" in line])
        first.terminate()
        first.wait()
        c.start_worker(name="w2", backend="container", **{"cache-dir": str(tmp_path / "cache2")})
        app = ember.App("fetch")

        @app.function(image=image, serialized=True)
        def read_token():
            return open("/token").read().strip()

        with app.run():
            assert read_token.remote() == token
        layer = image._resolve(lambda data: "").steps[-1].layer_id
        assert (tmp_path / "cache2" / "layers" / layer).is_dir()
        log = c.log("worker-w2")
        assert "fetching layer 1/2" in log and "fetching layer 2/2" in log and "=> step" not in log
    finally:
        c.stop()


def test_process_backend_runs_an_image_in_its_own_venv(cluster, capsys):
    """Where containers are unavailable, an image's packages go into a virtual environment."""
    import importlib.util
    assert importlib.util.find_spec("six") is None
    app = ember.App("venv")
    image = ember.Image.debian_slim().pip_install("six==1.17.0").env({"MODE": "venv"})

    @app.function(image=image, serialized=True)
    def where_is_six():
        import os
        import sys

        import six
        return six.__version__, sys.prefix, os.environ["MODE"]

    with app.run():
        version, prefix, mode = where_is_six.remote()
    assert version == "1.17.0" and mode == "venv" and "venvs" in prefix
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
