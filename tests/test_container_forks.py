"""Cold starts forked from a warm parent on the container backend (worker/parents.py): the
parent runs in a sandbox of its own, and each fork joins namespaces the worker made for it
ahead (worker/forkns.py). A fork is a container as any other: isolated (the escape suite's
attacks, run in a worker's real fork), held by its own limits, sharing no writable state with
its siblings; and a redeploy replaces the parent. Real worker, real containers, as root."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from ember import exception
from ember.worker import userns
from conftest import ROOT, container_backend_missing, module_cluster, wait_for
from test_container_commands import cli, containers
from test_escape import check_refused, host_paths, user_namespace_expected

import container_forks_app as app_module
import container_forks_threads_app as threads_app
import escape_app

IDLE = 5  # seconds without a fork before the worker retires a parent (EMBER_WARM_PARENT_IDLE)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if why := container_backend_missing():
        pytest.skip(f"container backend unavailable: {why}")
    with module_cluster(tmp_path_factory.mktemp("container-forks"), backend="container",
                        env={"EMBER_WARM_PARENT_IDLE": str(IDLE)}) as c:
        yield c


def worker_log(cluster) -> str:
    return cluster.log("worker-w1")


def forked_pair(call) -> tuple[dict, dict]:
    """Cold starts of `call` until two in a row were forked from one parent (each container that
    imports the module itself draws its own IMPORTED; a parent's forks share its draw)."""
    results = [call()]

    def two_forks():
        results.append(call())
        return results[-1]["imported"] == results[-2]["imported"]
    wait_for(two_forks, timeout=120, what="two cold starts forked from one warm parent")
    return results[-2], results[-1]


def test_a_forked_container_has_its_own_identity_and_namespaces(cluster):
    with app_module.app.run():
        first, second = forked_pair(app_module.who_am_i.remote)
    assert first["container_id"] != second["container_id"] and first["hostname"] != second["hostname"]
    for fork in (first, second):
        assert fork["pid"] == 2 and fork["pids"] == [1, 2], fork  # its own PID namespace: its init and itself
        assert fork["container_id"] in fork["hostname"] or fork["hostname"].startswith("ct-")
    log = worker_log(cluster)
    assert re.search(r"a warm parent \(pid \d+\) of who_am_i is ready", log)
    for fork in (first, second):
        assert re.search(rf"container {fork['container_id']} started \(pid \d+, forked from a warm parent\)", log)
    # Each in cgroups of its own (named by the worker, not the parent's).
    assert first["cgroup"] != second["cgroup"]


def test_a_forked_container_cannot_reach_out_of_it(cluster):
    paths = host_paths(cluster)
    with escape_app.app.run():
        first, second = forked_pair(lambda: escape_app.attack_as_a_cold_start.remote(paths))
    assert user_namespace_expected(cluster)  # a fork's namespaces are owned by one of its own
    for fork in (first, second):
        fork.pop("imported")
        # Seen from inside, its IDs map one to one onto the worker's user namespace (its own
        # user namespace's parent); seen from the host, onto the unprivileged range of any
        # container's (test_exec_logs_and_host_view_of_a_fork).
        assert fork["uid_map"] == ["0", "0", str(userns.COUNT)]
        fork["uid_map"] = ["0", str(userns.BASE), str(userns.COUNT)]
        check_refused(fork, paths, user_namespace=True)


def test_a_forked_container_is_held_by_its_own_memory_limit(cluster):
    with app_module.app.run():
        forked_pair(lambda: app_module.hog.remote(10))
        forks_before = worker_log(cluster).count("forked from a warm parent")
        with pytest.raises(exception.OutOfMemoryError, match="memory limit of 100 MiB"):
            app_module.hog.remote(400)
        assert worker_log(cluster).count("forked from a warm parent") > forks_before  # that one was a fork too
        assert app_module.hog.remote(10)["mb"] == 10  # its siblings run on


def test_forked_siblings_share_no_writable_state(cluster):
    with app_module.app.run():
        first, second = forked_pair(lambda: app_module.leave_marks.remote("a"))
        third = app_module.leave_marks.remote("b")
    for fork in (first, second, third):
        assert fork == {"imported": fork["imported"], "root": [], "tmp": [], "module": []}, fork
    assert third["imported"] == second["imported"]


APP = '''
import os
import ember

app = ember.App("container-fork-redeploy")
IMPORTED = os.urandom(8).hex()

@app.function(image=ember.Image.debian_slim(), single_use_containers=True)
def version():
    return {{"version": {version}, "imported": IMPORTED}}
'''


def deploy(cluster, tmp_path, version: int):
    path = tmp_path / "container_fork_redeploy.py"  # one module name: only its code changes
    path.write_text(textwrap.dedent(APP.format(version=version)))
    out = subprocess.run([sys.executable, "-m", "ember.cli.main", "deploy", str(path)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env=dict(os.environ))
    assert out.returncode == 0, out.stderr


def test_a_redeploy_replaces_the_parent_and_the_new_code_runs(cluster, tmp_path):
    import ember
    deploy(cluster, tmp_path, 1)
    version = ember.Function.from_name("container-fork-redeploy", "version")
    old, _ = forked_pair(version.remote)
    assert old["version"] == 1
    deploy(cluster, tmp_path, 2)
    version = ember.Function.from_name("container-fork-redeploy", "version")
    assert version.remote()["version"] == 2  # the old parent's code is never forked for the new
    new, _ = forked_pair(version.remote)
    assert new["version"] == 2 and new["imported"] != old["imported"]
    wait_for(lambda: "retired (its code was replaced)" in worker_log(cluster), what="the old parent to go")


def test_exec_logs_and_host_view_of_a_fork(cluster):
    """`ember container logs` and `exec` on a fork: its log, and commands run by its init (the
    exec agent) in its namespaces, root, cgroups, environment and working directory, as its
    function runs. Seen from the host, its user namespace maps onto the unprivileged range of
    any container's."""
    with app_module.app.run():
        forked_pair(lambda: app_module.held.remote("/"))  # released at once: its parent is warm now
        call = app_module.held.spawn()
        wait_for(lambda: [c for c in containers() if c["function"] == "held" and c["inputs"] == 1],
                 timeout=120, what="the fork to run its input")
        [cid] = [c["container_id"] for c in containers() if c["function"] == "held" and c["inputs"] == 1]
        [pid] = re.findall(rf"container {cid} started \(pid (\d+), forked from a warm parent\)", worker_log(cluster))
        for each in (int(pid), *children(int(pid))):  # the parent's child, and the fork's process
            with open(f"/proc/{each}/uid_map") as f:
                assert f.read().split() == ["0", str(userns.BASE), str(userns.COUNT)]
        wait_for(lambda: "held in" in cli("container", "logs", cid).stdout, what="its log")
        out = cli("container", "exec", cid, "--", "sh", "-c", 'hostname; pwd; echo "$GREETING"; '
                  "cut -d' ' -f4 /proc/$$/stat; readlink /proc/self/ns/mnt /proc/self/ns/pid; cat /proc/self/cgroup")
        assert out.returncode == 0, out.stderr
        hostname, cwd, greeting, parent, mnt, pid_ns, *cgroup = out.stdout.splitlines()
        assert parent == "1"  # forked by the fork's init, inside already
        out = cli("container", "exec", cid, "--", "sh", "-c", "tr a-z A-Z; touch /tmp/release; exit 4",
                  input="piped\n")
        assert (out.returncode, out.stdout) == (4, "PIPED\n"), out.stderr
        seen = call.get(timeout=60)
    assert seen["released"] and (hostname, mnt, pid_ns) == (seen["hostname"], seen["mnt"], seen["pid_ns"])
    assert "\n".join(cgroup) + "\n" == seen["cgroup"] and greeting == "hello from the function's env"
    assert cwd == "/root" or cwd.startswith("/"), cwd


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_where_a_container_cannot_fork_it_starts_the_usual_way_and_says_so_once(cluster):
    with threads_app.app.run():
        results = [threads_app.who_imported_me.remote() for _ in range(4)]
    assert len(set(results)) == 4  # each container imported the module itself
    said = ("containers of who_imported_me start without a warm parent: importing container_forks_threads_app "
            "started threads (started-at-import)")
    wait_for(lambda: said in worker_log(cluster), what="the worker to say why")
    assert worker_log(cluster).count(said) == 1
    for _ in range(2):  # a cold start in each run of its app
        with app_module.app.run():
            app_module.on_a_disk_of_its_own.remote()
    said = "containers of on_a_disk_of_its_own start without a warm parent: its ephemeral_disk= is not"
    assert worker_log(cluster).count(said) == 1
