"""Cold starts forked from a warm parent (worker/parents.py, container/parent.py), on the process
backend: a fork answers with its own identity, the parent has none, a redeploy replaces the
parent (the new code runs), and a module that cannot be forked soundly falls back, said once.

The container backend forks no parents yet (worker/parents.py says why, and what is built of
it: tests/test_forkns.py): its cold starts come from spares, which tests/test_containers.py covers.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import ROOT, dead, module_cluster, run_py, wait_for

import forks_app
import forks_optout_app
import forks_threads_app

IDLE = 3  # seconds without a fork before the worker retires a parent (EMBER_WARM_PARENT_IDLE)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("forks"), backend="process",
                        env={"EMBER_WARM_PARENT_IDLE": str(IDLE)}) as c:
        yield c


def worker_log(cluster) -> str:
    return cluster.log("worker-w1")


def parents_ready(cluster, name: str) -> int:
    """How many warm parents of the function `name` the worker has made ready so far."""
    return len(re.findall(rf"a warm parent \(pid \d+\) of {name} is ready", worker_log(cluster)))


def warm(cluster, call, name: str, ready_before: int = 0):
    """Cold starts of `call` until its code's parent is ready (two within IDLE start it; on a
    loaded machine two may be further apart, so this goes on calling)."""
    wait_for(lambda: call() and parents_ready(cluster, name) > ready_before, what=f"a warm parent of {name}")


def test_a_cold_start_forks_from_the_warm_parent_and_has_its_own_identity(cluster):
    with forks_app.app.run():
        warm(cluster, forks_app.who_am_i.remote, "who_am_i")
        first, second = forks_app.who_am_i.remote(), forks_app.who_am_i.remote()
    for fork in (first, second):
        # The module was imported by the parent, whose child the container is.
        assert fork["ppid"] == fork["imported_by"] != fork["pid"]
    assert first["imported_by"] == second["imported_by"]  # one parent, two forks
    assert first["pid"] != second["pid"] and first["container_id"] != second["container_id"]
    assert "forked from a warm parent" in worker_log(cluster)
    # The parent has no credential: each fork got its own from the worker as it was forked.
    with open(f"/proc/{first['imported_by']}/environ", "rb") as f:
        environ = f.read().split(b"\0")
    assert not any(v.startswith((b"EMBER_TOKEN_SECRET=", b"EMBER_CONTAINER_ID=")) for v in environ)


APP = '''
import os
import ember

app = ember.App("fork-redeploy")
IMPORTED_BY = os.getpid()

@app.function(single_use_containers=True)
def version():
    return {{"version": {version}, "forked": os.getppid() == IMPORTED_BY != os.getpid()}}
'''


def deploy(tmp_path, version: int):
    path = tmp_path / "fork_redeploy.py"  # one module name: only its code changes
    path.write_text(textwrap.dedent(APP.format(version=version)))
    out = subprocess.run([sys.executable, "-m", "ember.cli.main", "deploy", str(path)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env=dict(os.environ))
    assert out.returncode == 0, out.stderr


def test_a_redeploy_replaces_the_parent_and_the_new_code_runs(cluster, tmp_path):
    import ember
    deploy(tmp_path, 1)
    version = ember.Function.from_name("fork-redeploy", "version")
    warm(cluster, version.remote, "version", parents_ready(cluster, "version"))
    assert version.remote() == {"version": 1, "forked": True}
    ready = parents_ready(cluster, "version")
    deploy(tmp_path, 2)
    version = ember.Function.from_name("fork-redeploy", "version")
    assert version.remote()["version"] == 2  # the old parent's code is never forked for the new
    assert version.remote()["version"] == 2
    wait_for(lambda: parents_ready(cluster, "version") > ready, what="the new code's parent")
    assert version.remote() == {"version": 2, "forked": True}
    wait_for(lambda: "retired (its code was replaced)" in worker_log(cluster), what="the old parent to go")


@pytest.mark.parametrize("app, why", [
    (forks_threads_app, "importing forks_threads_app started threads (started-at-import)"),
    (forks_optout_app, "its module forks_optout_app opts out (__ember_fork__ = False)")])
def test_a_module_that_cannot_be_forked_falls_back_and_says_so_once(cluster, app, why):
    with app.app.run():
        results = [app.who_imported_me.remote() for _ in range(4)]
    # Each container imported the module itself: none was forked.
    assert all(r["pid"] == r["imported_by"] for r in results)
    said = f"containers of who_imported_me start without a warm parent: {why}"
    wait_for(lambda: said in worker_log(cluster), what="the worker to say why")
    assert worker_log(cluster).count(said) == 1


def test_a_class_forks_after_its_import_and_runs_its_enter_hooks_in_the_fork(cluster):
    forks = []
    with forks_app.app.run():
        # Cold starts until one forks: from a new parent, or from this module's code's parent that
        # an earlier test made ready, if it is not retired yet (one parent serves a module's code).
        wait_for(lambda: (r := forks_app.Loaded().where.remote())["ppid"] == r["imported_by"] and not forks.append(r),
                 what="a fork of Loaded")
    fork = forks[0]
    assert fork["imported_by"] != fork["pid"]
    assert fork["entered_in"] == fork["pid"]  # not in the parent: @enter hooks run in each container


def test_an_idle_parent_is_retired(cluster):
    forks = []
    with forks_app.app.run():  # cold starts until one forks (from this module's parent, or a new one)
        wait_for(lambda: (r := forks_app.who_am_i.remote())["ppid"] == r["imported_by"] and not forks.append(r),
                 what="a fork")
    parent = forks[0]["imported_by"]
    wait_for(lambda: dead(parent), timeout=IDLE + 10, what="the idle parent to be retired")
    assert f"warm parent {parent} retired (idle)" in worker_log(cluster)


BURST = 12  # inputs of a backlog, each holding a container of its own


def _log_times(text: str, pattern: str) -> list[str]:
    """The timestamps (asctime, to the millisecond: one clock on one machine) of the lines matching pattern."""
    return [m.group(1) for m in re.finditer(rf"^(\S+ \S+) .*{pattern}", text, re.M)]


def test_a_backlog_of_forks_is_asked_for_at_once_not_a_core_at_a_time(cluster, tmp_path):
    gate = tmp_path / "gate"
    got = []
    with forks_app.app.run():
        warm(cluster, forks_app.who_am_i.remote, "who_am_i", parents_ready(cluster, "who_am_i"))
        for _ in range(8):  # fork cold starts: what the control plane measures cold starts at (a few tens of ms)
            forks_app.who_am_i.remote()
        mapper = threading.Thread(target=lambda: got.extend(forks_app.held.map([str(gate)] * BURST)))
        mapper.start()
        wait_for(lambda: forks_app.held.get_current_stats().num_running_inputs == BURST, timeout=60,
                 what=f"{BURST} containers holding an input each")
        gate.touch()
        mapper.join(60)
    assert len(set(got)) == BURST
    asked = _log_times(cluster.log(), "starting container .* for held ")
    first_start = min(_log_times(worker_log(cluster), "container (?:" + "|".join(set(got)) + ") started"))
    # One core at a time (a start of a new interpreter is all CPU) would have asked for no more
    # than the worker has cores before the worker started any: forks are measured short, and
    # several per core are asked for at once (autoscaler.CPU_BOUND_START).
    assert sum(t <= first_start for t in asked) > os.cpu_count(), (asked, first_start)


def test_another_workspaces_same_code_does_not_fork_from_this_ones_parent(cluster):
    """Code and images are named by their bytes: workspace b's containers of the very module a
    runs must not be forks of a's parent (whose import ran for a), but of one of b's own."""
    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "ember.cli.main", *args], capture_output=True, text=True,
                             timeout=120, cwd=ROOT, env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli("workspace", "create", "fork-b")
    token = json.loads(cli("token", "new", "--workspace", "fork-b", "--json"))
    a_parents: set[int] = set()
    done = threading.Event()
    with forks_app.app.run():
        # Cold starts until one forks (a's parent may be an earlier test's, still warm).
        wait_for(lambda: (r := forks_app.who_am_i.remote())["ppid"] == r["imported_by"], what="a fork of who_am_i")

        def keep_warm():  # a's parent stays warm (and forks) all the while b runs
            while not done.is_set():
                r = forks_app.who_am_i.remote()
                if r["ppid"] == r["imported_by"]:
                    a_parents.add(r["imported_by"])

        warmer = threading.Thread(target=keep_warm)
        warmer.start()
        try:
            # b calls until one of its containers is a fork (of b's own parent, once b's code warms one).
            out = run_py(textwrap.dedent("""
                import json, time, forks_app
                results = []
                with forks_app.app.run():
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        results.append(forks_app.who_am_i.remote())
                        if results[-1]["ppid"] == results[-1]["imported_by"]:
                            break
                print(json.dumps(results))
                """), env_extra={"EMBER_TOKEN_ID": token["token_id"], "EMBER_TOKEN_SECRET": token["token_secret"]})
        finally:
            done.set()
            warmer.join()
    assert out.returncode == 0, out.stderr
    b_results = json.loads(out.stdout.strip().splitlines()[-1])
    assert a_parents, "a's containers forked from its parent throughout"
    assert not {r["imported_by"] for r in b_results} & a_parents, (b_results, a_parents)
    assert b_results[-1]["ppid"] == b_results[-1]["imported_by"], b_results  # b forks too, from its own
