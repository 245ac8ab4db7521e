"""Quotas, fair sharing and usage, on a real control plane and one worker of 2 CPU and 2 GiB.

Workspaces and their tokens are made with the CLI, as an admin would; each workspace's app runs
in a client process of its own with that workspace's token. What ran where is read from a file
the functions append to, and from `ember usage`: counts and order, never durations.
"""

import json
import os
import subprocess
import threading

import pytest
from conftest import PY, module_cluster, run_py, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("quotas"), cpu=2, memory=2048) as c:
        yield c


def ember(*args, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))
    return proc


def ok(*args, env=None) -> str:
    proc = ember(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def workspace(name: str, *quotas: str) -> dict:
    """A new workspace (with quotas) and the environment of a client with a token of it."""
    ok("workspace", "create", name)
    if quotas:
        ok("workspace", "set", name, *quotas)
    token = json.loads(ok("token", "new", "--workspace", name, "--json"))
    return {"EMBER_TOKEN_ID": token["token_id"], "EMBER_TOKEN_SECRET": token["token_secret"]}


def run_map(env: dict, function: str, path, args: list) -> subprocess.CompletedProcess:
    """Run the quota app's function over args in a client of the workspace; prints the results."""
    code = (f"import quota_app\nwith quota_app.app.run():\n"
            f"    print(list(quota_app.{function}.map([{str(path)!r}] * {len(args)}, {args!r})))")
    return run_py(code, env_extra=env, timeout=180)


def usage(*args, env=None) -> dict:
    return {row["workspace"]: row for row in json.loads(ok("usage", "--json", *args, env=env))}


def test_a_container_quota_runs_a_map_one_container_at_a_time(cluster, tmp_path):
    env = workspace("solo", "--max-containers", "1")
    path = tmp_path / "events"
    proc = run_map(env, "small", path, list(range(8)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == str([i * i for i in range(8)])
    # Without the quota its backlog would take the four containers the worker has room for.
    running = most = 0
    for line in path.read_text().splitlines():
        running += 1 if line.startswith("start") else -1
        most = max(most, running)
    assert most == 1
    assert "quota of 1 containers" in cluster.log()  # why its inputs waited, said once a while
    assert usage("--workspace", "solo")["solo"]["inputs"] == 8


@pytest.mark.parametrize("first,second", [("cpu_heavy", "memory_heavy"), ("memory_heavy", "cpu_heavy")])
def test_two_workspaces_share_a_full_cluster_and_their_usage_is_kept(cluster, tmp_path, first, second):
    """Workspace A fills the worker (two containers) with a long map; then workspace B maps too.
    The containers of one have CPU as their dominant share (1 CPU of 2), the other's memory (1 GiB
    of 2), in either order. While both have work, each runs about half of the inputs: A's idle
    containers give B their room."""
    team_a, team_b = f"a-{first.replace('_', '-')}", f"b-{second.replace('_', '-')}"
    a_env, b_env = workspace(team_a), workspace(team_b)
    path = tmp_path / "done"
    a_result = {}
    a = threading.Thread(target=lambda: a_result.update(proc=run_map(a_env, first, path, ["A"] * 120)))
    a.start()
    # B starts once A holds the whole worker: its containers have run inputs side by side.
    wait_for(lambda: path.exists() and path.read_text().count("A") >= 6, timeout=120, what="A to fill the worker")
    b = run_map(b_env, second, path, ["B"] * 30)
    a.join()
    assert b.returncode == 0 and a_result["proc"].returncode == 0, b.stderr + a_result["proc"].stderr
    order = path.read_text().split()
    assert order.count("A") == 120 and order.count("B") == 30
    # The window in which both had work: from B's first input to the last of whichever ended first.
    first_b = order.index("B")
    last = min(len(order) - 1 - order[::-1].index(tag) for tag in "AB")
    window = order[first_b:last + 1]
    print(f"fair share: {window.count('A')} inputs of A and {window.count('B')} of B while both had work")
    assert len(window) >= 20, f"B ran only once A was done: {order}"
    assert 0.3 <= window.count("B") / len(window) <= 0.7, window

    # Usage: per workspace, for an admin; a workspace token sees its own only.
    seen = usage()
    assert seen[team_a]["inputs"] == 120 and seen[team_b]["inputs"] == 30
    for ws in (team_a, team_b):
        assert seen[ws]["memory_gib_seconds"] > 0 and seen[ws]["cpu_seconds"] > 0 and seen[ws]["gpu_seconds"] == 0
    assert list(usage(env=b_env)) == [team_b]
    refused = ember("usage", "--workspace", team_a, env=b_env)
    assert refused.returncode != 0 and "only an admin token may see another workspace's usage" in refused.stderr
    by_function = json.loads(ok("usage", "--json", "--by", "function", "--workspace", team_b))
    assert [(r["app_name"], r["function_name"], r["inputs"]) for r in by_function] == [("quota-tests", second, 30)]
    assert json.loads(ok("usage", "--json", "--since", "2099-01-01")) == []

    # It survives a crash of the control plane.
    cluster.kill_server()
    cluster.start_server()
    after = usage()
    for ws in (team_a, team_b):
        assert after[ws]["inputs"] == seen[ws]["inputs"]
        assert after[ws]["memory_gib_seconds"] >= seen[ws]["memory_gib_seconds"]
        assert after[ws]["cpu_seconds"] >= seen[ws]["cpu_seconds"]
    table = ok("usage", "--by", "app")
    assert f"{team_a}\tquota-tests" in table and "INPUTS" in table
