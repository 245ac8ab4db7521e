"""Modal's @app.function / @app.cls options and App's defaults, with real processes: a control
plane and a process-backend worker (small ones, labelled, join for the reservation and region
tests), and the container backend for cgroup limits."""

import os
import subprocess
import sys

import pytest
from conftest import module_cluster, wait_for

import ember
from ember import exception
from ember.worker import cgroups as cg

import options_app


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("options")) as c:
        with options_app.app.run():
            yield c


def test_env_secrets_and_app_defaults(running):
    # The app's secrets, then the function's, then env= (which wins); a None in env= is left out.
    assert options_app.environment.remote() == {"GREETING": "hi", "SHARED": "env", "SKIPPED": None,
                                                 "FROM_APP": "app", "FROM_FUNCTION": "function"}


def test_max_inputs_retires_a_container_after_that_many(running):
    ids = [options_app.twice_each.remote() for _ in range(6)]
    print("containers of 6 sequential calls with max_inputs=2:", ids)
    assert len(set(ids)) == 3
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[4] == ids[5]


def test_single_use_containers_gives_each_input_its_own(running):
    ids = [options_app.once_each.remote() for _ in range(3)]
    ids += list(options_app.once_each.map(range(3)))
    assert len(set(ids)) == 6


def test_request_is_reserved_not_the_limit(running, tmp_path):
    # cpu=(0.5, 4), memory=(400, 4000) on a worker of 1 CPU and 1000 MiB (region=small: its own):
    # two containers fit at once only if what each reserves is its request (its limit alone
    # would fit none).
    running.start_worker("small", cpu=1, memory=1000, label="region=small")
    assert list(options_app.meet.map([str(tmp_path)] * 2, [2, 2])) == [2, 2]


def test_buffer_containers_keeps_idle_ones_while_busy(running, tmp_path):
    release = tmp_path / "go"
    call = options_app.hold.spawn(str(release))
    # One container runs the input; two more are kept idle beside it while it runs.
    wait_for(lambda: len([c for c in _function_containers(running, "hold")]) >= 3, timeout=60,
             what="two buffer containers beside the busy one")
    release.touch()
    assert call.get(timeout=60) == "released"


def _function_containers(cluster, name: str) -> list[str]:
    """The containers the control plane started for a function, from its log."""
    return [line for line in cluster.log().splitlines() if "starting container" in line and f" for {name} " in line]


def test_noted_options_print_their_note(running):
    # Printed as the app started (the module's fixture): read back through a fresh run elsewhere.
    code = ("import options_app\n"
            "with options_app.app.run():\n"
            "    print(options_app.noted.remote())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(options_app.__file__).rpartition("/")[0]))
    assert proc.returncode == 0, proc.stderr
    assert "noted" in proc.stdout
    for option in ("enable_memory_snapshot=True", "cloud='aws'", "nonpreemptible=True", "i6pn=True",
                   "experimental_options={'x': 1}", "proxy=", "routing_region="):
        assert f"ember: noted: {option}" in proc.stderr, proc.stderr
    assert "ember: environment:" not in proc.stderr  # only options that were set are noted


def test_startup_timeout_fails_a_slow_enter_hook(running):
    with pytest.raises(exception.InitError, match=r"startup_timeout=1s \(it was still its @ember.enter\(\) hooks\)"):
        options_app.SlowStart().ping.remote()


def test_enter_hooks_with_snap_run_first(running):
    assert options_app.Hooks().order_of_hooks.remote() == ["snap=True", "snap=False"]


def test_include_source_false_ships_no_source(running):
    # Its module is not shipped: the image would have to hold it.
    with pytest.raises(exception.InitError, match="No module named 'options_app'"):
        options_app.not_shipped.remote()


def test_included_apps_functions_run_with_the_app(running):
    assert options_app.from_other_app.remote(3) == "other:3"
    assert "from_other_app" in options_app.app.registered_functions
    assert options_app.from_other_app._app is options_app.app


def test_restrict_modal_access(running):
    assert options_app.calls_other.remote(2) == "other:2"
    for denied in options_app.restricted.remote(2):  # a call, a spawn, a dict
        assert denied.startswith("PermissionDeniedError") and "restrict_modal_access=True" in denied, denied


def test_app_lookup(running):
    with pytest.raises(exception.NotFoundError, match="no deployed app named 'looked-up'"):
        ember.App.lookup("looked-up")
    made = ember.App.lookup("looked-up", create_if_missing=True)
    assert made.app_id.startswith("ap-")
    assert ember.App.lookup("looked-up").app_id == made.app_id
    assert ember.App.lookup("looked-up", create_if_missing=True).app_id == made.app_id


def test_bad_options_say_what_to_pass():
    with pytest.raises(exception.InvalidError, match=r"its limit \(1\) is below its request \(2\)"):
        ember.App().function(cpu=(2, 1))
    with pytest.raises(exception.InvalidError, match="disagree"):
        ember.App().function(single_use_containers=True, max_inputs=3)
    with pytest.raises(exception.InvalidError, match="not an environment variable name"):
        ember.App().function(env={"1BAD": "x"})
    with pytest.raises(exception.InvalidError, match="unexpected keyword argument 'no_such_option'"):
        ember.App().function(no_such_option=1)
    with pytest.raises(exception.InvalidError, match="both have a function or class named"):
        a, b = ember.App("a"), ember.App("b")
        a.function(serialized=True)(lambda: 1)
        b.function(serialized=True)(lambda: 2)
        a.include(b)


def test_region_places_on_labelled_workers_only(running, capsys):
    # Last of the process-backend tests: a second worker, labelled, joins the cluster.
    running.start_worker("w2", cpu=1, memory=1000, label="region=eu")
    dirs = [options_app.where.remote() for _ in range(3)]
    assert all(f"{os.sep}w2{os.sep}" in d for d in dirs), dirs
    listing = subprocess.run([sys.executable, "-m", "ember.cli.main", "worker", "list"], capture_output=True,
                             text=True, timeout=60)
    assert "region=eu" in next(line for line in listing.stdout.splitlines() if line.startswith("w2")), listing
    # A region no worker is in: its input waits, and the app's terminal is told why.
    call = options_app.nowhere.spawn()
    told = []
    wait_for(lambda: told.append(capsys.readouterr().err) or "no connected worker is in its region (mars, venus)"
             in "".join(told), timeout=30, what="the app to be told that no worker is in its region")
    with pytest.raises(exception.TimeoutError):
        call.get(timeout=0.5)
    assert "--label region=mars" in running.log()


def test_cpu_and_memory_tuples_set_the_limits(container_cluster):
    import options_limits_app
    layout = cg.host_layout()
    if any(layout.version(c) != 1 for c in ("cpu", "memory")):
        pytest.skip(f"this host does not use cgroup v1 for cpu and memory: {layout}")
    with options_limits_app.app.run():
        names, env = options_limits_app.cgroup_names.remote()  # its container lives on, warm, while we look
        assert env == "yes"  # env= reaches a real container too
        mine = cg.Cgroups(names.pop())
        assert (mine.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"  # the limit: 0.5 CPU
        assert int((mine.dirs["memory"] / "memory.limit_in_bytes").read_text()) == 200 << 20  # the limit: 200 MiB
