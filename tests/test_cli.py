"""The `ember` command and the embedded local cluster."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

import ember
from ember import exception
from ember.function import parse_gpu

ROOT = pathlib.Path(__file__).resolve().parent.parent
EMBER = [sys.executable, "-m", "ember.cli.main"]


def ember_cmd(args, tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if k != "EMBER_SERVER_URL"}
    e.update(EMBER_HOME=str(tmp_path / "home"), **env)
    return subprocess.run(EMBER + args, capture_output=True, text=True, timeout=180, env=e, cwd=ROOT, check=False)


def test_help_lists_commands(tmp_path):
    proc = ember_cmd(["--help"], tmp_path)
    assert proc.returncode == 0
    for command in ("run", "server", "worker"):
        assert command in proc.stdout
    version = ember_cmd(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"ember {ember.__version__}"


def test_run_example_on_embedded_cluster(tmp_path):
    proc = ember_cmd(["run", "examples/hello.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "square.remote(7) = 49" in proc.stdout
    assert "sum of squares below 10 = 285" in proc.stdout
    assert "squaring 7 in a container" in proc.stdout
    assert re.search(r"ember: done in [0-9.]+s: 11 calls, 0 failed", proc.stderr), proc.stderr[-500:]
    # State lives under EMBER_HOME, and the cluster is gone afterwards.
    assert (tmp_path / "home" / "local" / "server" / "ember.db").exists()
    procs = subprocess.run(["pgrep", "-f", str(tmp_path / "home")], capture_output=True, text=True, check=False)
    assert procs.stdout.strip() == ""


def test_run_entrypoint_and_function_with_arguments(tmp_path):
    proc = ember_cmd(["run", "examples/hello.py", "--n", "4"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sum of squares below 4 = 14" in proc.stdout
    proc = ember_cmd(["run", "tests/apps/core_app.py::main", "--x", "5"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "result 25" in proc.stdout
    proc = ember_cmd(["run", "tests/apps/core_app.py::fail", "--kind", "value"], tmp_path)
    assert proc.returncode == 1 and "ValueError: value" in proc.stderr
    assert re.search(r"ember: done in [0-9.]+s: 1 call, 1 failed", proc.stderr), proc.stderr[-500:]


def test_run_unknown_function_lists_what_exists(tmp_path):
    proc = ember_cmd(["run", "examples/hello.py::nope"], tmp_path)
    assert proc.returncode == 2
    assert "no function or local entrypoint 'nope'" in proc.stderr and "square" in proc.stderr


def test_run_with_unreachable_server_fails_fast(tmp_path):
    proc = ember_cmd(["run", "examples/hello.py"], tmp_path, EMBER_SERVER_URL="127.0.0.1:1")
    assert proc.returncode == 1
    assert "No Ember control plane answered at 127.0.0.1:1" in proc.stderr


def test_worker_without_server_says_how(tmp_path):
    proc = ember_cmd(["worker", "--data-dir", str(tmp_path / "w")], tmp_path)
    assert proc.returncode == 2
    assert "--server" in proc.stderr


def test_server_and_worker_keep_their_state_under_ember_home(tmp_path, monkeypatch):
    from ember.cli.main import _parser
    monkeypatch.setenv("EMBER_HOME", str(tmp_path))  # read when the command runs, not at import
    for command in ("server", "worker"):
        assert _parser().parse_args([command]).data_dir == str(tmp_path / command)


def test_function_options_are_validated():
    app = ember.App("validation")
    for bad in ({"cpu": 0}, {"cpu": "2"}, {"memory": 0}, {"memory": 1.5}, {"timeout": 0},
                {"max_containers": 0}, {"min_containers": -1}, {"min_containers": 3, "max_containers": 2},
                {"scaledown_window": 0}, {"retries": "3"}, {"gpu": "Z80"}, {"gpu": "A100:9"},
                {"secrets": "x"}, {"volumes": ["/data"]}):
        with pytest.raises(exception.InvalidError):
            app.function(**bad)(lambda: None)
    with pytest.raises(exception.InvalidError, match="max_retries"):
        ember.Retries(max_retries=11)
    with pytest.raises(exception.InvalidError, match="backoff_coefficient"):
        ember.Retries(max_retries=1, backoff_coefficient=0.5)
    assert ember.Retries.coerce(3).max_retries == 3


def test_gpu_strings():
    assert parse_gpu(None) == ""
    assert parse_gpu("h100") == "H100"
    assert parse_gpu("A100:2") == "A100:2"
    assert parse_gpu("any") == "any"
    assert parse_gpu("A100-80GB:1") == "A100-80GB"


def test_app_run_in_a_script_starts_a_local_cluster(tmp_path):
    code = """
import ember
app = ember.App("script")
@app.function()
def inc(x):
    return x + 1
with app.run():
    print(inc.remote(1))
"""
    e = {k: v for k, v in os.environ.items() if k != "EMBER_SERVER_URL"}
    e["EMBER_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=e, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"


ERRORS_APP = """
import ember

app = ember.App("cli-errors")


@app.function()
def fails():
    raise ValueError("failed in the container")


@app.local_entrypoint()
def missing_function():
    ember.Function.from_name("no-such-app", "gone").remote()


@app.local_entrypoint()
def user_error():
    fails.remote()
"""

SECRET_APP = """
import ember

app = ember.App("cli-secret")


@app.function(secrets=[ember.Secret.from_name("missing-secret")])
def needs_secret():
    pass
"""


def test_embers_errors_are_one_line_and_a_users_a_traceback(cluster, tmp_path):
    (tmp_path / "errors_app.py").write_text(ERRORS_APP)
    (tmp_path / "secret_app.py").write_text(SECRET_APP)

    def cli(*args, url=cluster.url):
        return subprocess.run(EMBER + list(args), capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env=dict(os.environ, EMBER_SERVER_URL=url), check=False)

    for out, message in ((cli("run", "secret_app.py"), "missing-secret"),
                         (cli("app", "stop", "nope"), "no deployed app named 'nope'"),
                         (cli("app", "list", url="127.0.0.1:1"), "No Ember control plane answered"),
                         (cli("run", "errors_app.py::missing_function"), r"Cannot call gone\(\): .*no-such-app")):
        assert out.returncode == 1, out.stderr
        assert re.search(f"^ember: .*{message}", out.stderr, re.MULTILINE) and "Traceback" not in out.stderr, out.stderr
    out = cli("run", "errors_app.py::user_error")
    assert out.returncode == 1
    # As Python shows it: from the user's entrypoint (none of the command's frames), with the
    # container's traceback after it.
    frames = re.findall(r'File "([^"]+)", line \d+, in (\w+)', out.stderr.split("Remote traceback")[0])
    assert frames == [(str(tmp_path / "errors_app.py"), "user_error")], out.stderr
    assert "fails.remote()" in out.stderr and "ValueError: failed in the container" in out.stderr
    assert 'raise ValueError("failed in the container")' in out.stderr.split("Remote traceback")[1]
