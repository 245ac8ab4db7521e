"""The `ember` command and the embedded local cluster."""

import os
import pathlib
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
    return subprocess.run(EMBER + args, capture_output=True, text=True, timeout=180, env=e, cwd=ROOT)


def test_help_lists_commands(tmp_path):
    proc = ember_cmd(["--help"], tmp_path)
    assert proc.returncode == 0
    for command in ("run", "server", "worker"):
        assert command in proc.stdout


def test_run_example_on_embedded_cluster(tmp_path):
    proc = ember_cmd(["run", "examples/hello.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "square.remote(7) = 49" in proc.stdout
    assert "sum of squares below 10 = 285" in proc.stdout
    assert "squaring 7 in a container" in proc.stdout
    # State lives under EMBER_HOME, and the cluster is gone afterwards.
    assert (tmp_path / "home" / "local" / "server" / "ember.db").exists()
    procs = subprocess.run(["pgrep", "-f", str(tmp_path / "home")], capture_output=True, text=True)
    assert procs.stdout.strip() == ""


def test_run_entrypoint_and_function_with_arguments(tmp_path):
    proc = ember_cmd(["run", "examples/hello.py", "--n", "4"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sum of squares below 4 = 14" in proc.stdout
    proc = ember_cmd(["run", "tests/apps/core_app.py::main", "--x", "5"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "result 25" in proc.stdout


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
    for bad in (dict(cpu=0), dict(cpu="2"), dict(memory=0), dict(memory=1.5), dict(timeout=0),
                dict(max_containers=0), dict(min_containers=-1), dict(min_containers=3, max_containers=2),
                dict(scaledown_window=0), dict(retries="3"), dict(gpu="Z80"), dict(gpu="A100:9"),
                dict(secrets="x"), dict(volumes=["/data"])):
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
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=e)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"
