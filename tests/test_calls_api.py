"""Modal's call API as Modal programs use it: with_options / with_concurrency / with_batching
handles, spawn_map, FunctionCall.gather / num_inputs / iter / cancel(terminate_containers=),
get_current_stats, update_autoscaler, @ember.batched and @ember.concurrent, against a real control
plane and a process-backend worker."""

import os
import pathlib
import textwrap
import uuid

import calls_app
import pytest
from calls_app import app
from conftest import module_cluster, wait_for

import ember
from ember import exception


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    # 8192 MiB: a handle asking for more waits for a worker that has it.
    with module_cluster(tmp_path_factory.mktemp("calls"), cpu=4, memory=8192) as c:
        with app.run():
            yield c


# ---------------------------------------------------------------- with_options and friends


def test_with_options_timeout_and_retries_apply_to_the_handle_only(running, tmp_path):
    assert calls_app.nap.remote(1.5) == 1.5  # timeout=30
    with pytest.raises(exception.FunctionTimeoutError, match="0.5s"):
        calls_app.nap.with_options(timeout=0.5).remote(1.5)
    assert calls_app.nap.remote(1.5) == 1.5  # the original keeps its own

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(RuntimeError, match="first attempt fails"):
        calls_app.flaky.remote(str(tmp_path / "a"))  # retries=0
    assert calls_app.flaky.with_options(retries=1).remote(str(tmp_path / "b")) == "second attempt"


def test_with_options_resources_apply_to_the_handle_only(running):
    big = calls_app.square.with_options(memory=16384)  # more than the worker has: it waits
    call = big.spawn(3)
    wait_for(lambda: big.get_current_stats().backlog == 1, what="the big call queued")
    stats = big.get_current_stats()
    print("stats of the handle needing 16384 MiB:", stats)
    assert stats.num_total_runners == 0
    assert calls_app.square.remote(3) == 9  # the original's containers are small: it runs
    call.cancel()
    with pytest.raises(exception.InvalidError, match="memory="):
        calls_app.square.with_options(memory="lots")
    with pytest.raises(exception.InvalidError, match="max_inputs="):
        calls_app.square.with_concurrency(max_inputs=0)
    with pytest.raises(exception.InvalidError, match="max_batch_size="):
        calls_app.square.with_batching(max_batch_size=5000, wait_ms=10)


def test_with_concurrency_and_with_batching_handles(running, tmp_path):
    # wait_for_all takes one input at a time; through the handle, 4 overlap in one container's threads.
    wide = calls_app.wait_for_all.with_concurrency(max_inputs=4)
    start = tmp_path / "starts"
    start.mkdir()
    assert len(set(wide.map([str(start)] * 4, [4] * 4))) == 1
    assert len(os.listdir(start)) == 4  # four threads
    batched = calls_app.batch_sizes.with_batching(max_batch_size=2, wait_ms=500)
    out = list(batched.map(range(6)))
    assert [x for x, _ in out] == [x * 10 for x in range(6)]
    assert max(n for _, n in out) <= 2 and max(n for _, n in out) == 2, out


# ---------------------------------------------------------------- calls


def test_spawn_map_then_all_results_are_there(running):
    name = f"spawn-map-{uuid.uuid4().hex[:8]}"
    call = calls_app.record.spawn_map([name] * 200, range(200))
    assert call.num_inputs() == 200
    call.get(index=199, timeout=120)
    d = ember.Dict.from_name(name, create_if_missing=True)
    wait_for(lambda: d.len() == 200, timeout=60, what="200 entries")
    assert d[17] == 289
    squares = calls_app.square.spawn_map(range(10))
    assert [squares.get(index=i, timeout=60) for i in range(10)] == [i * i for i in range(10)]
    with pytest.raises(exception.InvalidError, match="index=10"):
        squares.get(index=10)


def test_gather_and_num_inputs(running):
    calls = [calls_app.square.spawn(i) for i in range(5)]
    assert ember.FunctionCall.gather(*calls) == [0, 1, 4, 9, 16]
    assert calls[0].num_inputs() == 1
    assert ember.FunctionCall.gather() == []


def test_iter_on_a_generator_call(running):
    call = calls_app.count_to.spawn(5)
    assert list(call.iter()) == [0, 1, 2, 3, 4]
    assert list(call.iter(start=2, end=4)) == [2, 3]
    with pytest.raises(exception.InvalidError, match="generator"):
        call.get()
    with pytest.raises(exception.InvalidError, match="not of a generator"):
        list(calls_app.square.spawn(2).iter())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def started_pid(path: str) -> int:
    wait_for(lambda: os.path.exists(path + ".started") and pathlib.Path(path + ".started").read_text(), timeout=60,
             what="the input to start")
    return int(pathlib.Path(path + ".started").read_text())


def test_cancel_terminate_containers_stops_the_running_container(running, tmp_path):
    # A plain cancel interrupts the input; its container lives on, warm.
    call = calls_app.block_until.spawn(str(tmp_path / "a"))
    pid = started_pid(str(tmp_path / "a"))
    call.cancel()
    with pytest.raises(exception.Error):
        call.get(timeout=30)
    second = calls_app.block_until.spawn(str(tmp_path / "b"))
    assert started_pid(str(tmp_path / "b")) == pid
    assert calls_app.block_until.get_current_stats().num_running_inputs == 1
    # terminate_containers=True kills the container that runs it.
    (tmp_path / "b").touch()
    assert second.get(timeout=30) == pid
    call = calls_app.block_until.spawn(str(tmp_path / "c"))
    assert started_pid(str(tmp_path / "c")) == pid
    call.cancel(terminate_containers=True)
    with pytest.raises(exception.Error):
        call.get(timeout=30)
    wait_for(lambda: not alive(pid), timeout=30, what="its container's process to be killed")


def test_get_current_stats_shows_a_backlog(running, tmp_path):
    path = str(tmp_path / "release")
    one = calls_app.block_until.with_options(max_containers=1)
    calls = [one.spawn(path) for _ in range(4)]
    wait_for(lambda: one.get_current_stats().backlog == 3, timeout=60, what="a backlog of 3")
    stats = one.get_current_stats()
    print(stats)
    assert stats.num_running_inputs == 1 and stats.num_total_runners == 1
    pathlib.Path(path).touch()
    assert len(set(ember.FunctionCall.gather(*calls))) == 1  # one container ran them all


# ---------------------------------------------------------------- @ember.batched


def test_batched_sizes_and_each_callers_own_result(running):
    out = list(calls_app.batch_sizes.map(range(20)))
    assert [x for x, _ in out] == [x * 10 for x in range(20)]
    sizes = [n for _, n in out]
    print("batch sizes seen:", sizes)
    assert max(sizes) <= 4 and max(sizes) > 1
    assert calls_app.batch_sizes.remote(7) == (70, 1)


def test_batched_async_with_two_arguments(running):
    assert list(calls_app.async_batch.map(range(10), range(100, 110))) == [x + 100 + x for x in range(10)]
    assert calls_app.async_batch.remote(1, ys=2) == 3


def test_batched_exception_reaches_each_input_of_the_batch(running):
    out = list(calls_app.batch_fails.map([12, 13, 14], return_exceptions=True))
    assert all(isinstance(e, ValueError) and "13 is in the batch" in str(e) for e in out), out
    with pytest.raises(exception.ExecutionError, match=r"returned \d+ results for a batch of \d+ inputs"):
        list(calls_app.batch_wrong_length.map([1, 2, 3]))


def test_batched_method_of_a_class(running):
    out = list(calls_app.Scaler(factor=3).scale.map(range(12)))
    assert [x for x, _ in out] == [x * 3 for x in range(12)]
    assert max(n for _, n in out) <= 5


def test_batched_refuses_what_it_cannot_batch():
    with pytest.raises(exception.InvalidError, match="generator"):
        @ember.batched(max_batch_size=4, wait_ms=10)
        def gen(xs):
            yield xs
    with pytest.raises(exception.InvalidError, match=r"\*args"):
        @ember.batched(max_batch_size=4, wait_ms=10)
        def star(*xs):
            return xs
    with pytest.raises(exception.InvalidError, match="wait_ms="):
        ember.batched(max_batch_size=4, wait_ms=-1)


# ---------------------------------------------------------------- @ember.concurrent


def test_concurrent_async_inputs_share_one_loop_and_overlap(running, tmp_path):
    start = tmp_path / "starts"
    start.mkdir()
    out = list(calls_app.on_one_loop.map([str(start)] * 6, [6] * 6))  # each waits for all 6 to start
    print("loops, threads, pids:", {(a, b, c) for a, b, c in out})
    assert len({loop for loop, _, _ in out}) == 1
    assert len({thread for _, thread, _ in out}) == 1
    assert len({pid for _, _, pid in out}) == 1


# ---------------------------------------------------------------- a deployed function's autoscaler


DEPLOYED = """
import ember
app = ember.App("autoscaled")

@app.function(scaledown_window=2)
def hello():
    return "hi"
"""


def test_update_autoscaler_keeps_a_container_warm_without_redeploy(running, tmp_path):
    import subprocess
    import sys
    path = tmp_path / "autoscaled.py"
    path.write_text(textwrap.dedent(DEPLOYED))
    out = subprocess.run([sys.executable, "-m", "ember.cli.main", "deploy", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    f = ember.Function.from_name("autoscaled", "hello")
    assert f.get_current_stats().num_total_runners == 0
    f.update_autoscaler(min_containers=1)
    wait_for(lambda: f.get_current_stats().num_total_runners == 1, timeout=60, what="a warm container")
    assert f.remote() == "hi"
    f.update_autoscaler(min_containers=0)
    wait_for(lambda: f.get_current_stats().num_total_runners == 0, timeout=60, what="it to scale down")
    with pytest.raises(exception.InvalidError, match="min_containers"):
        f.update_autoscaler(min_containers=-1)
    with pytest.raises(exception.InvalidError, match="min_containers=3 exceeds max_containers=2"):
        f.update_autoscaler(min_containers=3, max_containers=2)
    f.update_autoscaler(buffer_containers=2, scaledown_window=30)  # taken: only while it is busy
