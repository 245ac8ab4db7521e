"""The core path against a real control plane, worker and containers."""

import asyncio
import os
import pathlib
import signal
import subprocess
import threading
import traceback

import cloudpickle
import core_app
import pytest
from conftest import PY, on_both_stores, run_py, wait_for
from core_app import app

import ember
from ember import exception
from ember._client import bridge


@pytest.fixture
def running(cluster):
    with app.run():
        yield cluster


@on_both_stores()
def test_remote_local_and_kwargs(running):
    assert core_app.square.remote(7) == 49
    assert core_app.add.remote(2, b=3) == 5
    assert core_app.square.local(5) == 25


def test_containers_are_reused_while_warm(running):
    pids = {core_app.where.remote() for _ in range(5)}
    assert len(pids) == 1
    assert os.getpid() not in pids


@on_both_stores()
def test_map_starmap_for_each(running):
    assert list(core_app.square.map(range(100))) == [x * x for x in range(100)]
    assert sorted(core_app.square.map(range(50), order_outputs=False)) == sorted(x * x for x in range(50))
    assert list(core_app.add.map([1, 2], [10, 20])) == [11, 22]
    assert list(core_app.add.starmap([(1, 2), (3, 4)])) == [3, 7]
    assert list(core_app.square.map([])) == []
    assert core_app.square.for_each(range(10)) is None


def test_map_return_exceptions(running):
    out = list(core_app.fail.map(["custom", "x"], return_exceptions=True))
    assert isinstance(out[0], core_app.CustomError) and isinstance(out[1], ValueError)
    with pytest.raises(core_app.CustomError):
        list(core_app.fail.map(["custom"]))


def test_a_long_map_comes_in_order_one_by_one_and_may_be_left_early(running):
    # More outputs than the client's relay holds ahead (bridge.AHEAD): they come from the loop a
    # batch at a time and reach the caller one by one, in order, blocking and async alike.
    n = 3 * bridge.AHEAD
    assert list(core_app.square.map(range(n))) == [x * x for x in range(n)]

    async def in_a_loop():
        return [y async for y in core_app.square.map.aio(range(n))]

    assert asyncio.run(in_a_loop()) == [x * x for x in range(n)]
    # Left in the middle of a batch: the rest is dropped, and the next map runs.
    for i, y in enumerate(core_app.square.map(range(n))):
        assert y == i * i
        if i == bridge.AHEAD + 1:
            break
    assert list(core_app.square.map(range(3))) == [0, 1, 4]
    # Plain data and what only cloudpickle pickles, as arguments and results alike.
    values = [7, (1, "a", None, b"x", 2.5), {"k": [1, (2, 3)]}, list(range(100)), frozenset({1}),
              exception.Error("e"), lambda: 1]
    echoed = list(core_app.echo.map(values))
    assert echoed[:5] == values[:5] and echoed[6]() == 1
    assert type(echoed[5]) is exception.Error and str(echoed[5]) == "e"


def test_spawn_get_and_from_id_in_another_process(running):
    call = core_app.square.spawn(12)
    assert call.object_id.startswith("fc-")
    assert call.get(timeout=60) == 144
    code = f"import ember; print(ember.FunctionCall.from_id({call.object_id!r}).get())"
    proc = run_py(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "144"


def test_get_timeout(running, tmp_path):
    call = core_app.slow.spawn(str(tmp_path / "m"), str(tmp_path / "release"), 1)
    with pytest.raises(exception.TimeoutError):
        call.get(timeout=0.2)
    (tmp_path / "release").touch()
    assert call.get(timeout=60) == 1


def test_exception_is_reraised_with_remote_traceback(running):
    with pytest.raises(core_app.CustomError, match="it broke on purpose") as info:
        core_app.fail.remote("custom")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes and "core_app.py" in notes and "raise CustomError" in notes


def test_exception_that_cannot_be_rebuilt_becomes_remote_error(running):
    with pytest.raises(exception.RemoteError, match="UnpicklableError"):
        core_app.fail.remote("unpicklable")


def test_unpicklable_argument_fails_at_call_site(running):
    with pytest.raises(exception.SerializationError, match=r"Argument 0 \(lock\) of echo\(\) cannot be pickled"):
        core_app.echo.remote(threading.Lock())
    with pytest.raises(exception.SerializationError, match="Argument 'value'"):
        core_app.echo.spawn(value=threading.Lock())


def test_unpicklable_result_names_the_function(running):
    with pytest.raises(exception.RemoteError, match=r"result of bad_result\(\) \(lock\) cannot be pickled"):
        core_app.bad_result.remote()


def test_large_payloads_travel_as_blobs(running, cluster):
    data = os.urandom(50 * 1024 * 1024)
    assert core_app.echo.remote(data) == data
    # Argument and result went through the blob store, not inside messages.
    blobs = [p for p in (cluster.tmp / "server" / "blobs").rglob("*") if p.is_file()]
    assert any(p.stat().st_size > len(data) for p in blobs)


def test_generator_items_stream_as_produced(running, tmp_path):
    gate = tmp_path / "gate"
    items = []
    for item in core_app.count_up.remote_gen(3, str(gate)):
        items.append(item)
        if item == 0:
            gate.touch()  # the generator only goes on after we saw its first item
    assert items == [0, 1, 2]
    with pytest.raises(exception.InvalidError, match="remote_gen"):
        core_app.count_up.remote(3)
    with pytest.raises(exception.InvalidError, match="not a generator"):
        list(core_app.square.remote_gen(3))


def test_async_twins(running):
    async def main():
        assert await core_app.square.remote.aio(6) == 36
        results = await asyncio.gather(*(core_app.square.remote.aio(i) for i in range(20)))
        assert results == [i * i for i in range(20)]
        assert [y async for y in core_app.square.map.aio(range(10))] == [x * x for x in range(10)]
        call = await core_app.square.spawn.aio(4)
        assert await call.get.aio() == 16
        assert [y async for y in core_app.count_up.remote_gen.aio(3)] == [0, 1, 2]
        with pytest.raises(core_app.CustomError):
            await core_app.fail.remote.aio("custom")

    asyncio.run(main())


def test_async_twins_run_concurrently_on_the_callers_loop(running, tmp_path):
    async def main():
        # While one call waits, the caller's loop (and other calls) carry on.
        slow = asyncio.create_task(core_app.slow.remote.aio(str(tmp_path / "m"), str(tmp_path / "go"), "slow"))
        assert await core_app.square.remote.aio(3) == 9
        (tmp_path / "go").touch()
        assert await slow == "slow"
        assert await core_app.square.for_each.aio(range(3)) is None
        assert [y async for y in core_app.add.starmap.aio([(1, 2)])] == [3]
        call = await core_app.slow.spawn.aio(str(tmp_path / "m2"), str(tmp_path / "never"), 1)
        await asyncio.to_thread(wait_for, (tmp_path / "m2").exists)
        await call.cancel.aio()
        with pytest.raises(exception.InputCancellation):
            await call.get.aio(timeout=30)

    asyncio.run(main())


def cancel_once_started(work, marker, outcome):
    """Run the coroutine `work()` as a task, cancel it once its input has started (the marker
    exists), and check that the input running in the container was interrupted."""
    async def main():
        task = asyncio.create_task(work())
        await asyncio.to_thread(wait_for, marker.exists, what="the input to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_for(outcome.exists, what="the running input to be interrupted")
    assert outcome.read_text() == "InputCancelled"


def test_cancelling_an_awaited_call_cancels_it(running, tmp_path):
    marker, outcome = tmp_path / "m", tmp_path / "outcome"
    cancel_once_started(lambda: core_app.waits_to_be_cancelled.remote.aio(str(marker), str(outcome)),
                        marker, outcome)


def test_cancelling_an_async_for_over_a_map_cancels_the_map(running, tmp_path):
    marker, outcome = tmp_path / "m", tmp_path / "outcome"

    async def consume():
        async for _ in core_app.waits_to_be_cancelled.map.aio([str(marker)], [str(outcome)]):
            pass

    cancel_once_started(consume, marker, outcome)


def test_ctrl_c_in_a_blocking_call_cancels_it(cluster, tmp_path):
    marker, outcome = tmp_path / "m", tmp_path / "outcome"
    code = f"""
import core_app
from conftest import wait_for
with core_app.app.run():
    try:
        core_app.waits_to_be_cancelled.remote({str(marker)!r}, {str(outcome)!r})
    except KeyboardInterrupt:
        wait_for(lambda: __import__("os").path.exists({str(outcome)!r}), what="the input to be interrupted")
        print("interrupted", flush=True)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pathlib.Path(core_app.__file__).parent),
                                                        str(pathlib.Path(__file__).parent)]))
    proc = subprocess.Popen([os.sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    wait_for(lambda: marker.exists() and marker.read_text(), what="the input to start")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert out.strip() == "interrupted", err
    assert outcome.read_text() == "InputCancelled"


def test_a_remote_error_shows_the_callers_frames_not_embers(running):
    ember_dir = os.path.dirname(ember.__file__)

    def check(e: BaseException):
        frames = [f.filename for f in traceback.extract_tb(e.__traceback__)]
        assert frames and all(f == __file__ for f in frames), frames
        text = "".join(traceback.format_exception(e))
        assert "ember/_client" not in text and "concurrent/futures" not in text, text
        assert "raise CustomError" in text  # the remote traceback, as a note

    for call in (lambda: core_app.fail.remote("custom"), lambda: core_app.fail.spawn("custom").get(),
                 lambda: list(core_app.fail.map(["custom"]))):
        with pytest.raises(core_app.CustomError) as info:
            call()
        check(info.value)
    with pytest.raises(exception.InvalidError) as info:  # Ember's own errors too
        core_app.count_up.remote(3)
    assert not any(f.filename.startswith(ember_dir) for f in traceback.extract_tb(info.value.__traceback__))

    async def main():
        try:
            await core_app.fail.remote.aio("custom")
        except core_app.CustomError as e:
            check(e)
        else:
            raise AssertionError("no error")

    asyncio.run(main())


def assert_same_error_every_way(f, arg, error, message):
    """The call made with .remote(), .spawn().get() and .map() fails with the same error, which
    names the function (not only an id)."""
    for how, call in {".remote()": lambda: f.remote(arg), ".spawn().get()": lambda: f.spawn(arg).get(timeout=60),
                      ".map()": lambda: list(f.map([arg]))}.items():
        with pytest.raises(error, match=message) as info:
            call()
        assert "fu-" not in str(info.value) and "fc-" not in str(info.value), (how, info.value)


def test_the_same_condition_is_the_same_error_every_way(cluster):
    with core_app.app.run():
        assert_same_error_every_way(core_app.echo, threading.Lock(), exception.SerializationError,
                                    r"Argument 0 \(lock\) of echo\(\) cannot be pickled")
        # A copy of the function, as another function would get it: it outlives its app.
        orphan = cloudpickle.loads(cloudpickle.dumps(core_app.square))
    assert_same_error_every_way(orphan, 2, exception.NotFoundError, r"Cannot call square\(\): its app is not running")
    assert_same_error_every_way(ember.Function.from_name("no-such-app", "gone"), 2, exception.NotFoundError,
                                r"Cannot call gone\(\): .*no deployed app named 'no-such-app'")


def test_a_failing_map_is_reported_once(cluster):
    code = """
import threading
import cloudpickle
import core_app

def inputs():
    yield 1
    raise ValueError("the inputs broke")

with core_app.app.run():
    orphan = cloudpickle.loads(cloudpickle.dumps(core_app.echo))
    for it in (inputs(), [threading.Lock()]):
        try:
            list(core_app.echo.map(it))
        except Exception as e:
            print("caught", type(e).__name__)
try:
    list(orphan.map([1]))  # its app stopped: the call is refused
except Exception as e:
    print("caught", type(e).__name__)
"""
    proc = run_py(code)
    assert proc.stdout.split() == ["caught", "ValueError", "caught", "SerializationError", "caught",
                                   "NotFoundError"], proc.stderr
    assert "Traceback" not in proc.stderr and "Exception in thread" not in proc.stderr, proc.stderr


def test_a_passed_function_keeps_its_id_name_and_kind(running):
    object_id, name, items = core_app.describe_passed.remote(core_app.count_up, 3)
    assert object_id == core_app.count_up.object_id and name == "<ember.Function count_up>"
    assert items == [0, 1, 2]


def test_retries_with_backoff(running, tmp_path, capsys):
    assert core_app.flaky.remote(str(tmp_path / "n"), 2) == 3
    # Each failed attempt is shown on the caller's terminal with its traceback, as it happens.
    shown = ""

    def attempts_shown():
        nonlocal shown
        shown += capsys.readouterr().err
        return "failed (attempt 2 of 3): RuntimeError: attempt 2 fails; retrying in" in shown

    wait_for(attempts_shown, timeout=30, what="the failed attempts on the terminal")
    assert "failed (attempt 1 of 3): RuntimeError: attempt 1 fails" in shown
    assert "Traceback (most recent call last)" in shown and "in flaky" in shown
    with pytest.raises(RuntimeError, match="attempt 3 fails"):
        core_app.flaky.remote(str(tmp_path / "m"), 5)
    assert (tmp_path / "m").read_text() == "3"  # 1 try + 2 retries, then the error


def test_container_crash_is_retried_then_reported(running, tmp_path):
    assert core_app.flaky.remote(str(tmp_path / "a"), 1, "exit") == 2
    assert core_app.flaky.remote(str(tmp_path / "b"), 1, "kill") == 2
    with pytest.raises(exception.ContainerExitedError, match="exited with code 3"):
        core_app.crash.remote(3)
    with pytest.raises(exception.ContainerExitedError, match="killed by SIGKILL"):
        core_app.flaky.remote(str(tmp_path / "c"), 10, "kill")


def test_timeout_stops_the_container(running, tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(exception.FunctionTimeoutError, match="timed out after 1s"):
        core_app.too_slow.remote(str(pid_file))
    pid = int(pid_file.read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the timed-out container to end")


def test_cancel(running, tmp_path):
    call = core_app.slow.spawn(str(tmp_path / "m"), str(tmp_path / "never"), 1)
    wait_for(lambda: (tmp_path / "m").exists(), what="the input to start")
    call.cancel()
    with pytest.raises(exception.InputCancellation):
        call.get(timeout=30)
    # The container survives a cancelled input and serves the next one.
    assert core_app.square.remote(3) == 9


def test_parallel_containers_up_to_max_containers(running, tmp_path):
    d = tmp_path / "rendezvous"
    d.mkdir()
    pids = list(core_app.rendezvous.map([str(d)] * 4, range(4)))
    assert len(set(pids)) == 2


def test_prints_stream_while_the_function_runs(cluster, tmp_path):
    marker = tmp_path / "release"
    code = f"""
import core_app
with core_app.app.run():
    print("result:", core_app.print_then_wait.remote({str(marker)!r}), flush=True)
"""
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(core_app.__file__).parent))
    proc = subprocess.Popen([os.sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    # The function waits for the marker; we only create it after seeing its print.
    line = proc.stdout.readline()
    assert line.strip() == "hello from the container"
    marker.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "result: done"
    assert "to stderr" in err


def test_app_not_running_is_a_clear_error(cluster):
    with pytest.raises(exception.ExecutionError, match="which is not running"):
        core_app.square.remote(2)


def test_no_server_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("EMBER_SERVER_URL", "127.0.0.1:1")
    with pytest.raises(exception.ConnectionError, match=r"127\.0\.0\.1:1.*ember server"), app.run():
        pass


def test_idle_container_stops_after_scaledown_window(running):
    pid = core_app.short_lived.remote()
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the idle container to stop")
    assert core_app.short_lived.remote() != pid


def test_a_function_calls_another_from_its_container(running):
    assert core_app.sum_of_squares.remote(4) == 14 + 16


def test_min_containers_start_before_any_call(running):
    def starts():
        return running.log().count("for kept_warm on worker")

    wait_for(lambda: starts() == 2, what="two warm containers of kept_warm")
    pids = {core_app.kept_warm.remote() for _ in range(20)}
    assert len(pids) <= 2 and starts() == 2  # calls went to them: none started for the calls


def test_async_functions_and_async_generators(running):
    assert core_app.async_square.remote(6) == 36
    assert list(core_app.async_square.map(range(5))) == [0, 1, 4, 9, 16]
    assert list(core_app.async_count.remote_gen(4)) == [0, 1, 2, 3]


def test_concurrent_inputs_run_at_once_in_one_container(running):
    results = list(core_app.overlapping.map([0.5] * 4))
    assert len({pid for _, pid in results}) == 1  # max_containers=1
    assert max(most for most, _ in results) >= 2


def test_cancelling_a_concurrent_input(running, tmp_path):
    marker = tmp_path / "started"
    call = core_app.sleeps_forever.spawn(str(marker))
    wait_for(marker.exists, what="the input to start")
    call.cancel()
    with pytest.raises(exception.InputCancellation):
        call.get(timeout=30)


SCRIPT_WITH_A_POOL = '''
import multiprocessing
import ember

app = ember.App("pool-script")


def square(x):
    return x * x


@app.function()
def pool_sum(n):
    # Pickles `square` by reference (__main__.square here): the container imports this file.
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return sum(pool.map(square, range(n)))


if __name__ == "__main__":
    with app.run():
        for _ in range(3):  # forks beside the runtime's gRPC threads, more than once
            print(list(pool_sum.map([10, 20, 30, 40])))
'''


def test_a_script_run_directly_forks_a_pool_of_its_own_functions(cluster, tmp_path):
    """`python script.py`: the function forks a multiprocessing pool that runs a function of
    the script; the children neither abort in gRPC's fork handlers nor miss `square`."""
    script = tmp_path / "pool_script.py"
    script.write_text(SCRIPT_WITH_A_POOL)
    proc = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:3] == ["[285, 2470, 8555, 20540]"] * 3, proc.stdout
    assert "Check failed" not in proc.stderr
