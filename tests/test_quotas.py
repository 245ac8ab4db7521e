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
from conftest import PY, module_cluster, run_async, run_py, wait_for

from ember.proto import api_pb2
from ember.server.auth import ADMIN, MAIN, Principal
from ember.server.scheduler import Scheduler
from ember.server.store import open_store

ADMIN_PRINCIPAL = Principal(ADMIN, MAIN, "")


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
    assert f"{team_a}\tquota-tests" in table and "INPUTS" not in table  # piped: rows only


# ---- the decisions of shares.py, on the control plane's own parts without processes (as
# tests/test_dispatch.py): what would go to workers and containers is collected in lists.


class Plane:
    def __init__(self, tmp_path, cpu: float, memory_mb: int):
        self.now = 1000.0
        self.sched = Scheduler(open_store(tmp_path / "ember.db"), lease_timeout=3, worker_timeout=3, app_timeout=600,
                               output_retention=3600, clock=lambda: self.now, later=lambda delay, callback: None)
        self.to_worker: list[api_pb2.WorkerCommand] = []
        self.worker = self.sched.fleet.worker_connected(api_pb2.WorkerRegister(
            worker_id="w1", boot_id="b1", name="w1", cpu=cpu, memory_mb=memory_mb), self.to_worker.append, "tk-w")

    def function(self, workspace: str, cpu: float, memory_mb: int, inputs: int = 0, app: str = ""):
        if self.sched.identity.workspace(workspace) is None:
            self.sched.identity.create_workspace(ADMIN_PRINCIPAL, workspace)
        apps = self.sched.apps
        app_id = apps.create_app(workspace, app or f"app-{workspace}")
        fn = apps.function(apps.create_function(app_id, api_pb2.FunctionDefinition(
            name="f", resources=api_pb2.Resources(cpu=cpu, memory_mb=memory_mb))))
        if inputs:
            self.sched.ledger.create_call(workspace, fn.function_id, f"fc-{workspace}{app}", [
                api_pb2.Input(idx=i, args=api_pb2.Payload(data=b"x")) for i in range(inputs)], True, maybe_exists=False)
        return fn

    def advance(self, seconds: float):
        """Time passes, the worker's and its containers' heartbeats keep coming, and the control plane ticks."""
        self.now += seconds
        self.worker.last_seen = self.now
        for c in self.worker.containers.values():
            c.last_seen = self.now
        self.sched.tick()

    def started(self) -> list[str]:
        """The function ids the worker was asked to start containers of, in order."""
        return [cmd.start_container.function_id for cmd in self.to_worker if cmd.HasField("start_container")]

    def connect(self, fn):
        """Each starting container of fn says hello and asks for an input."""
        for c in list(fn.containers.values()):
            if c.send is None:
                self.sched.fleet.container_connected(api_pb2.ContainerHello(container_id=c.container_id), [].append)
                self.sched.dispatch.container_wants(c, 1)

    def finish(self, c):
        """The container sends the output of the input it holds, and asks for the next."""
        (input_id,) = c.held
        self.sched.dispatch.container_outputs(c, api_pb2.OutputBatch(outputs=[api_pb2.Output(
            input_id=input_id, status=api_pb2.Output.SUCCESS)], want_inputs=1), 0)


@run_async
async def test_room_goes_to_the_workspace_with_the_smaller_dominant_share(tmp_path):
    plane = Plane(tmp_path, cpu=2, memory_mb=2048)
    a = plane.function("a", cpu=1, memory_mb=256, inputs=10)  # its backlog starts two containers: the worker is full
    plane.connect(a)
    c1, c2 = a.containers.values()
    assert c1.held and c2.held and plane.worker.free() == (0, 1536)
    # b's containers are half of the memory: it finds no room, and waits.
    b = plane.function("b", cpu=0.5, memory_mb=1024, inputs=5)
    assert plane.started() == [a.function_id] * 2
    # Meanwhile a, with the larger share, gets no more room ...
    assert not plane.sched.placement.start_container(a)
    assert "workspace b, with a smaller share" in plane.sched.shares.must_wait(a)
    # ... and of its containers that finish an input, one stops: a at half is no more than b would be.
    plane.finish(c1)
    plane.finish(c2)
    assert c1.stopping and not c1.held and not c2.stopping and c2.held
    plane.sched.fleet.container_exited(api_pb2.ContainerExited(container_id=c1.container_id), plane.worker)
    plane.now += 0.2
    plane.sched.tick()
    assert plane.started() == [a.function_id] * 2 + [b.function_id]
    # Now each has half (a of the CPU, b of the memory): neither gives the other room.
    plane.connect(b)
    plane.finish(c2)
    assert not c2.stopping and c2.held
    # Once b stops asking for room, it holds no one back.
    plane.sched.ledger.cancel_call("b", "fc-b")
    plane.now += 3
    assert plane.sched.shares.must_wait(a) is None


@run_async
async def test_an_idle_container_makes_room_for_a_waiting_function_of_its_workspace(tmp_path):
    plane = Plane(tmp_path, cpu=2, memory_mb=2048)
    a = plane.function("w", cpu=1, memory_mb=256, inputs=2, app="first")
    a.definition.scaledown_window = 600  # without room made, b would wait ten minutes
    plane.connect(a)
    c1, c2 = a.containers.values()
    plane.finish(c1)
    plane.finish(c2)
    assert not c1.held and not c2.held and plane.worker.free() == (0, 1536)  # both idle, the worker full
    b = plane.function("w", cpu=1, memory_mb=256, inputs=1, app="second")
    assert plane.started() == [a.function_id] * 2  # b found no room: it waits
    plane.advance(0.5)
    assert not c1.stopping and not c2.stopping  # a container idle for a moment keeps its room
    plane.advance(1)
    # One of a's idle containers stops for b (not both: b needs one), ...
    assert sorted([c1.stopping, c2.stopping]) == [False, True]
    stopped = c1 if c1.stopping else c2
    assert "made room for" in stopped.stop_why and "same workspace" in stopped.stop_why
    plane.advance(1)
    assert [c1.stopping, c2.stopping].count(True) == 1  # ... also while its room is on its way
    plane.sched.fleet.container_exited(api_pb2.ContainerExited(container_id=stopped.container_id), plane.worker)
    plane.advance(0.2)
    assert plane.started() == [a.function_id] * 2 + [b.function_id]
    # A container of a function with inputs queued, or kept by min_containers, makes no room.
    kept = c2 if stopped is c1 else c1
    a.definition.min_containers = 1
    plane.function("w", cpu=1, memory_mb=256, inputs=1, app="third")
    plane.advance(2)
    assert not kept.stopping
    # A function short of its min_containers waits for room as one with inputs queued does.
    a.definition.min_containers = 0
    plane.sched.ledger.cancel_call("w", "fc-wthird")
    warm = plane.function("w", cpu=1, memory_mb=256, app="warm")
    warm.definition.min_containers = 1
    for _ in range(3):
        plane.advance(1)
    assert kept.stopping and "made room for" in kept.stop_why


@run_async
async def test_quotas_bound_containers_cpu_memory_and_gpus(tmp_path):
    plane = Plane(tmp_path, cpu=8, memory_mb=8192)
    plane.sched.identity.create_workspace(ADMIN_PRINCIPAL, "q")
    plane.sched.identity.set_limits(ADMIN_PRINCIPAL, "q", max_cpu=1.5)
    fn = plane.function("q", cpu=1, memory_mb=1024, inputs=4)
    assert plane.started() == [fn.function_id]  # of the four its backlog wants, one: a second would pass 1.5 CPU
    assert plane.sched.shares.quota_refusal(fn) == "workspace q uses 1 of its quota of 1.5 CPU"
    plane.sched.identity.set_limits(ADMIN_PRINCIPAL, "q", max_cpu=-1, max_memory_mb=512)
    assert "needs 1024 MiB of memory, more than workspace q's quota of 512" in plane.sched.shares.quota_refusal(fn)
    plane.sched.identity.set_limits(ADMIN_PRINCIPAL, "q", max_memory_mb=-1, max_containers=2)
    assert plane.sched.shares.quota_refusal(fn) is None
    assert plane.sched.placement.start_container(fn)
    assert plane.sched.shares.quota_refusal(fn) == "workspace q uses 2 of its quota of 2 containers"
    gpu = plane.function("g", cpu=1, memory_mb=128)
    gpu.definition.resources.gpu = "H100"
    plane.sched.identity.set_limits(ADMIN_PRINCIPAL, "g", max_gpus=1)
    assert plane.sched.shares.quota_refusal(gpu) is None  # room or not, one GPU is within its quota


# ---- CPU time as each backend measures it. Last in this file: the container cluster's
# environment is this process's while its module fixture lives.


def burn_is_counted(env: dict, workspace_name: str, seconds: float, at_least: float):
    """burn(seconds) in a workspace of its own: `ember usage` comes to count at least `at_least`
    CPU-seconds of it (reports come every few seconds, and when its container ends)."""
    admin = dict(env)
    ws_env = {**admin, **workspace_env(admin, workspace_name)}
    code = f"import quota_app\nwith quota_app.app.run():\n    print(quota_app.burn.remote({seconds}))"
    proc = run_py(code, env_extra=ws_env)
    assert proc.returncode == 0, proc.stderr
    row = {}

    def counted():
        rows = json.loads(ok("usage", "--json", "--by", "function", "--workspace", workspace_name, env=admin))
        row.update(next((r for r in rows if r["function_name"] == "burn"), {}))
        return row.get("cpu_seconds", 0) >= at_least and row.get("inputs") == 1

    wait_for(counted, timeout=60, what=f"{at_least} CPU-seconds to be counted")


def workspace_env(env: dict, name: str) -> dict:
    ok("workspace", "create", name, env=env)
    token = json.loads(ok("token", "new", "--workspace", name, "--json", env=env))
    return {"EMBER_TOKEN_ID": token["token_id"], "EMBER_TOKEN_SECRET": token["token_secret"]}


def test_cpu_time_of_a_process_is_counted(cluster):
    # Read from /proc every second: what a container uses in its last second may go uncounted.
    burn_is_counted(cluster.env, "burn-process", 2.0, at_least=1.0)


def test_cpu_time_of_a_container_is_its_cgroups(container_cluster):
    burn_is_counted(container_cluster.env, "burn-container", 1.0, at_least=1.0)
