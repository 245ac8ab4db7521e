"""The autoscaler with real processes (a control plane and a process-backend worker, one for the
module): a backlog gets its containers at once, buffer containers come and go, and
Function.update_autoscaler applies at once."""

import collections
import threading
import time

import pytest
from conftest import module_cluster, wait_for

from ember import exception

import autoscale_app

N = 20


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("autoscale")) as c:
        with autoscale_app.app.run():
            yield c


def _runners(fn) -> int:
    return fn.get_current_stats().num_total_runners


def test_a_backlog_gets_its_max_containers_at_once(running, tmp_path):
    gate = tmp_path / "gate"
    ran = []
    mapper = threading.Thread(target=lambda: ran.extend(autoscale_app.capped.map([str(gate)] * N, [0.05] * N)))
    mapper.start()
    # Both containers start for the queued inputs; each takes one and holds it at the gate.
    wait_for(lambda: autoscale_app.capped.get_current_stats().num_running_inputs == 2, timeout=60,
             what="two containers running an input each")
    stats = autoscale_app.capped.get_current_stats()
    assert (stats.num_total_runners, stats.backlog) == (2, N - 2), stats  # max_containers=2 holds
    gate.touch()
    mapper.join(60)
    assert len(ran) == N
    split = collections.Counter(cid for cid, _ in ran)
    assert len(split) == 2, split
    # Both were asked for as the backlog came, before either had run anything: not the second
    # once the first had shown its inputs take a while (which split 20 inputs 14/6 before).
    created = dict(running.query(f"SELECT container_id, created_at FROM containers WHERE container_id IN "
                                 f"({', '.join(repr(c) for c in split)})"))
    assert max(created.values()) < min(began for _, began in ran), (created, sorted(b for _, b in ran)[:3])
    # Both then ran the backlog side by side (an even split give or take a few inputs).
    assert min(split.values()) >= N // 2 - 3, split


def test_buffer_containers_come_while_busy_and_go_when_idle(running, tmp_path):
    gate = tmp_path / "gate"
    call = autoscale_app.buffered.spawn(str(gate))
    wait_for(lambda: _runners(autoscale_app.buffered) == 3, timeout=60,
             what="two buffer containers beside the busy one")
    time.sleep(2.5)  # beyond its scaledown_window=1 several ticks over: idle, yet kept while it is busy
    assert _runners(autoscale_app.buffered) == 3
    gate.touch()
    assert call.get(timeout=60)[0]
    # Not busy now: all of them go once idle for the window (min_containers=0).
    wait_for(lambda: _runners(autoscale_app.buffered) == 0, timeout=60, what="the idle containers to stop")


def test_update_autoscaler_applies_at_once(running, tmp_path):
    fn = autoscale_app.adjusted
    fn.update_autoscaler(min_containers=3)
    assert _runners(fn) == 3  # started as the call returned, not at the next tick
    fn.update_autoscaler(min_containers=0, max_containers=1)
    assert _runners(fn) == 1  # the two beyond the new max stop at once (idle ones first)
    with pytest.raises(exception.InvalidError, match="max_containers=0"):
        fn.update_autoscaler(max_containers=0)
    gate = tmp_path / "gate"
    calls = [fn.spawn(str(gate)) for _ in range(3)]
    wait_for(lambda: fn.get_current_stats().num_running_inputs == 1, timeout=60, what="one input running")
    assert fn.get_current_stats().backlog == 2 and _runners(fn) == 1
    fn.update_autoscaler(max_containers=None)  # no limit again: the backlog gets its containers
    assert _runners(fn) == 3
    wait_for(lambda: fn.get_current_stats().num_running_inputs == 3, timeout=60, what="the three inputs running")
    gate.touch()
    assert len({c.get(timeout=60)[0] for c in calls}) == 3  # each on a container of its own


def test_concurrent_target_inputs_guide_and_max_inputs_bound(running, tmp_path):
    gate = tmp_path / "gate"
    # target_inputs=2: the autoscaler starts a container for each two inputs of the backlog...
    calls = [autoscale_app.wide.spawn(str(gate)) for _ in range(4)]
    wait_for(lambda: autoscale_app.wide.get_current_stats().num_running_inputs == 4, timeout=60,
             what="the four inputs running")
    assert _runners(autoscale_app.wide) == 2
    # ...and a container takes up to max_inputs=4 when no other can be had (max_containers=1).
    one = autoscale_app.wide.with_options(max_containers=1)
    calls += [one.spawn(str(gate)) for _ in range(4)]
    wait_for(lambda: one.get_current_stats().num_running_inputs == 4, timeout=60, what="four inputs in one container")
    assert _runners(one) == 1
    gate.touch()
    ran = [c.get(timeout=60)[0] for c in calls]
    assert len(set(ran[4:])) == 1 and set(ran[4:]).isdisjoint(ran[:4])
    # Four inputs at once for its two idle containers: target_inputs=2 each, not four for the first.
    gate = tmp_path / "gate2"
    again = []
    mapper = threading.Thread(target=lambda: again.extend(autoscale_app.wide.map([str(gate)] * 4)))
    mapper.start()
    wait_for(lambda: autoscale_app.wide.get_current_stats().num_running_inputs == 4, timeout=60,
             what="the four inputs running")
    gate.touch()
    mapper.join(60)
    assert sorted(collections.Counter(cid for cid, _ in again).values()) == [2, 2]
