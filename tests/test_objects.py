"""Dicts and queues: every operation, from the caller and from containers, durable across a
control-plane restart, and exact under many concurrent producers and consumers; on the frame
transport (the default) over TCP and over a unix socket (as the embedded local cluster's)."""

import asyncio
import queue
import subprocess
import sys
import threading

import objects_app
import pytest
from conftest import ROOT, on_both_stores, on_tcp_and_unix, wait_for

import ember
from ember import exception


@on_both_stores(unix=True)
def test_dict_operations(cluster):
    d = ember.Dict.from_name("settings", create_if_missing=True)
    d["a"] = 1
    d.put(("tuple", 2), {"nested": [1, 2]})
    assert d["a"] == 1 and d.get(("tuple", 2)) == {"nested": [1, 2]} and d.get("missing", "dflt") == "dflt"
    assert d.put("a", 99, skip_if_exists=True) is False and d["a"] == 1
    assert "a" in d and not d.contains("zzz") and len(d) == 2 and d.len() == 2
    d.update({"b": 2}, c=3)
    assert sorted(d.keys(), key=str) == sorted(["a", ("tuple", 2), "b", "c"], key=str)
    assert dict(d.items())["c"] == 3 and sorted(v for v in d.values() if isinstance(v, int)) == [1, 2, 3]
    assert d.pop("b") == 2
    with pytest.raises(KeyError):
        d["b"]
    with pytest.raises(KeyError):
        d.pop("b")
    # Another handle on the same name sees the same data.
    assert ember.Dict.from_name("settings")["c"] == 3
    d.clear()
    assert len(d) == 0


@on_tcp_and_unix()
def test_missing_names_and_ephemeral_objects(cluster):
    ember.Dict.from_name("exists", create_if_missing=True).put("k", "v")
    with pytest.raises(exception.NotFoundError, match="no dict named 'nope'.*exists"):
        ember.Dict.from_name("nope").get("k")
    with pytest.raises(exception.InvalidError):
        ember.Queue.from_name("bad name!")
    with ember.Dict.ephemeral() as d, ember.Queue.ephemeral() as q:
        d["x"] = 1
        q.put("y")
        assert d["x"] == 1 and q.get() == "y"
    with pytest.raises(exception.NotFoundError):
        d.get("x")
    ember.Dict.delete("exists")
    with pytest.raises(exception.NotFoundError):
        ember.Dict.from_name("exists").get("k")


@on_tcp_and_unix()
def test_queue_operations(cluster):
    q = ember.Queue.from_name("jobs", create_if_missing=True)
    q.put(1)
    q.put_many([2, 3, 4])
    q.put("other", partition="p1")
    assert q.len() == 4 and q.len(partition="p1") == 1 and q.len(total=True) == 5
    assert list(q.iterate()) == [1, 2, 3, 4] and q.len() == 4  # iterate does not remove
    assert q.get() == 1 and q.get_many(2) == [2, 3]
    assert q.get(partition="p1") == "other"
    assert q.get(block=False) == 4 and q.get(block=False) is None
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert q.get_many(5, timeout=0.1) == []
    q.put_many(["a", "b"], partition="p2")
    q.clear(partition="p2")
    assert q.len(partition="p2") == 0
    q.put_many([5, 6])
    q.put(7, partition="p3")
    q.clear(all=True)
    assert q.len(total=True) == 0


@on_tcp_and_unix()
def test_async_twins(cluster):
    d = ember.Dict.from_name("aio", create_if_missing=True)
    q = ember.Queue.from_name("aio-q", create_if_missing=True)

    async def main():
        await d.put.aio("k", [1])
        assert await d.get.aio("k") == [1] and await d.len.aio() == 1 and await d.keys.aio() == ["k"]
        getter = asyncio.create_task(q.get.aio(timeout=60))  # waits without blocking this loop
        await q.put_many.aio([1, 2, 3])
        assert await getter == 1
        assert [x async for x in q.iterate.aio()] == [2, 3]

    asyncio.run(main())
    assert list(q.iterate()) == [2, 3] and d["k"] == [1]


@on_tcp_and_unix()
def test_operations_keep_their_order_while_the_socket_is_full(cluster):
    # 12 MB of puts at once: the first go out in their caller's turn, the socket's buffer fills,
    # and the rest wait their turn (on both sides): none may overtake another.
    q = ember.Queue.from_name("full-socket", create_if_missing=True)
    d = ember.Dict.from_name("full-socket", create_if_missing=True)
    values = [bytes([i]) * 300_000 for i in range(40)]

    async def main():
        await asyncio.gather(*(op for i, v in enumerate(values) for op in (q.put.aio(v), d.put.aio("k", i))))
        return await asyncio.gather(*(q.get.aio() for _ in values))

    assert asyncio.run(main()) == values
    assert d["k"] == len(values) - 1


@on_tcp_and_unix()
def test_a_blocked_get_wakes_when_an_item_arrives(cluster):
    q = ember.Queue.from_name("wake", create_if_missing=True)
    got = []
    waiting = threading.Thread(target=lambda: got.append(q.get(timeout=60)))
    waiting.start()
    wait_for(lambda: waiting.is_alive(), what="the getter to start")
    q.put("hello")
    waiting.join(60)
    assert got == ["hello"]


@on_tcp_and_unix()
def test_functions_use_dicts_and_queues_passed_in_or_by_name(cluster):
    with objects_app.app.run():
        d = ember.Dict.from_name("shared", create_if_missing=True)
        assert objects_app.record.remote(d, "from-container", [1, 2]) == [1, 2]
        assert d["from-container"] == [1, 2]
        assert [objects_app.bump_by_name.remote("shared", "n") for _ in range(3)] == [1, 2, 3]
        with ember.Queue.ephemeral() as q:
            objects_app.produce.remote(q, 0, 5)
            assert q.get_many(10) == [0, 1, 2, 3, 4]


@on_both_stores(unix=True)
def test_many_producers_and_consumers_lose_and_duplicate_nothing(cluster):
    with objects_app.app.run(), ember.Queue.ephemeral() as q:
        consumers = [objects_app.consume.spawn(q) for _ in range(4)]
        produced = sum(objects_app.produce.starmap([(q, i * 250, 250) for i in range(8)]))
        got = [item for c in consumers for item in c.get(timeout=120)]
    assert produced == 2000
    assert len(got) == 2000 and set(got) == set(range(2000))


@on_both_stores(unix=True)
def test_dicts_and_queues_survive_a_control_plane_restart(cluster):
    ember.Dict.from_name("durable", create_if_missing=True)["k"] = "kept"
    ember.Queue.from_name("durable-q", create_if_missing=True).put_many(["x", "y"])
    cluster.kill_server()
    cluster.start_server()
    assert ember.Dict.from_name("durable")["k"] == "kept"
    assert ember.Queue.from_name("durable-q").get_many(5) == ["x", "y"]


@on_tcp_and_unix()
def test_cli_lists_creates_reads_clears_and_deletes(cluster):
    def ember_cli(*args):
        return subprocess.run([sys.executable, "-m", "ember.cli.main", *args], capture_output=True, text=True,
                              timeout=60, cwd=ROOT, check=False)

    assert ember_cli("dict", "create", "cli-d").returncode == 0
    ember.Dict.from_name("cli-d")["greeting"] = "hi"
    out = ember_cli("dict", "list").stdout
    assert "cli-d\t1 entries" in out
    assert ember_cli("dict", "get", "cli-d", "greeting").stdout.strip() == "'hi'"
    assert ember_cli("dict", "get", "cli-d", "nope").returncode == 1
    ember.Queue.from_name("cli-q", create_if_missing=True).put_many([1, 2, 3])
    assert ember_cli("queue", "get", "cli-q", "2").stdout.split() == ["1", "2"]
    assert ember_cli("queue", "clear", "cli-q").returncode == 0
    assert ember.Queue.from_name("cli-q").len() == 0
    assert ember_cli("dict", "delete", "cli-d").returncode == 0
    missing = ember_cli("dict", "delete", "cli-d")
    assert missing.returncode == 1 and "no dict named 'cli-d'" in missing.stderr


def test_plain_keys_and_values_pickle_to_cloudpickles_bytes():
    # A Dict's keys are compared by their bytes: the plain-data fast path must give exactly
    # cloudpickle's, or keys stored before it would no longer be found.
    import cloudpickle

    from ember._client.serialization import dumps
    samples = ["k", b"\x00", 0, -1, 2**70, 1.5, float("nan"), True, None, (), ("a", 1), [1, [2, (3,)]],
               {"a": 1, 2: [None, 1.0]}, {"nested": {"d": ("x",)}}, list(range(16)), list(range(17)),
               (1, {1, 2}), {"f": len}]
    for obj in samples:
        assert dumps(obj) == cloudpickle.dumps(obj), obj
