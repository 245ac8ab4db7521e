"""The Store conformance suite: each aggregate, through the interface only, for every implementation.

Each test runs once per implementation (the params of the `url` fixture): another store is one
more entry in URLS. Reopening the store shows what was made durable. The migration tests at the
end are the SQLite store's own, but for the one that checks both engines reach one schema.
"""

import asyncio
import shutil
import sqlite3

import pytest
from conftest import run_async, wait_for
from services import postgres_url

from ember.proto import api_pb2
from ember.server.store import NotLeader, StoreError, StoreUnavailable, open_store
from ember.server.store.migrate import MIGRATIONS, migrate, schema_version

URLS = {"sqlite": lambda tmp: f"sqlite://{tmp / 'ember.db'}", "postgres": lambda tmp: postgres_url()}


@pytest.fixture(params=sorted(URLS))
def url(request, tmp_path):
    return URLS[request.param](tmp_path)


@pytest.fixture
def reopen(url):
    """Open the store, closing the one opened before: what it made durable must be there again."""
    opened = []

    def reopen():
        if opened:
            opened[-1].close()
        opened.append(open_store(url))
        return opened[-1]

    yield reopen
    opened[-1].close()


@pytest.fixture
def store(reopen):
    return reopen()


def output(input_id: str) -> bytes:
    return api_pb2.Output(input_id=input_id).SerializeToString()


# ---- the leader lease


def test_one_holder_leads_until_its_lease_expires(store, url):
    other = open_store(url)  # a second control plane on the same database
    try:
        assert store.lease_holder() is None
        epoch = store.acquire_lease("cp-a", "a:1", 30)
        assert epoch is not None
        assert other.acquire_lease("cp-b", "b:1", 30) is None  # a holds it
        assert other.lease_holder()[:3] == ("cp-a", "a:1", epoch)
        assert store.acquire_lease("cp-a", "a:1", 30) == epoch  # its own: extended, same epoch
        assert store.renew_lease("cp-a", epoch, 0.01)
        wait_for(lambda: other.acquire_lease("cp-b", "b:1", 30) is not None, what="a's lease to expire")
        assert other.lease_holder()[:3] == ("cp-b", "b:1", epoch + 1)  # it changed hands: a new epoch
        assert not store.renew_lease("cp-a", epoch, 30)  # a's lease is gone
        assert store.acquire_lease("cp-a", "a:1", 30) is None
        other.release_lease("cp-b", epoch + 1)  # a clean stop: no waiting for the expiry
        assert store.acquire_lease("cp-a", "a:1", 30) == epoch + 2
    finally:
        other.close()


@run_async
async def test_a_commit_of_a_holder_that_lost_the_lease_is_undone(store, url):
    other = open_store(url)
    try:
        epoch = store.acquire_lease("cp-a", "a:1", 0.01)
        fenced = []
        store.fence("cp-a", epoch, lambda: fenced.append(True))
        store.create_app("ap-1", "main", "kept")
        await store.durable()  # a still leads: its write commits
        wait_for(lambda: other.acquire_lease("cp-b", "b:1", 30) is not None, what="a's lease to expire")
        store.create_app("ap-2", "main", "undone")
        with pytest.raises(NotLeader):
            await store.durable()
        assert fenced == [True]
        with pytest.raises(NotLeader):  # and it writes nothing more
            store.create_app("ap-3", "main", "refused")
        assert sorted(row[0] for row in other.running_apps()) == ["ap-1"]
    finally:
        other.close()


# ---- group commit


@run_async
async def test_writes_are_durable_together_once_committed(store, url):
    other = open_store(url)
    try:
        store.create_app("ap-1", "main", "first")
        store.create_app("ap-2", "main", "second")
        committed = []
        store.on_durable(lambda: committed.append("ap-1 and ap-2"))
        assert committed == [] and other.running_apps() == []
        await store.durable()
        assert committed == ["ap-1 and ap-2"]
        assert sorted(app_id for app_id, *_ in other.running_apps()) == ["ap-1", "ap-2"]
        store.on_durable(lambda: committed.append("nothing open"))
        assert committed[-1] == "nothing open"
        await store.durable()  # nothing open: returns at once
    finally:
        other.close()


@run_async
async def test_close_commits_what_is_open(store, reopen):
    store.create_app("ap-1", "main", "unsaved")
    store = reopen()
    assert [app_id for app_id, *_ in store.running_apps()] == ["ap-1"]


# ---- apps and functions


@run_async
async def test_apps_deploy_versions_and_history(store, reopen):
    store.create_app("ap-1", "main", "web", deployed=True)
    store.create_app("ap-e", "main", "scratch")
    assert store.last_version("main", "web") == 0 and store.app_history("main", "web") == []
    store.deploy_app("ap-1", 1, None)
    store.create_app("ap-2", "main", "web", deployed=True)
    store.deploy_app("ap-2", 2, "ap-1")
    assert store.last_version("main", "web") == 2 and store.last_version("main", "scratch") == 0
    assert sorted(store.running_apps()) == [("ap-1", "main", "web", 1, 1, "superseded"),
                                            ("ap-2", "main", "web", 1, 2, "running"),
                                            ("ap-e", "main", "scratch", 0, 0, "running")]
    store.stop_app("ap-1")
    store.stop_app("ap-e")
    await store.durable()

    store = reopen()
    assert store.running_apps() == [("ap-2", "main", "web", 1, 2, "running")]
    history = store.app_history("main", "web")
    assert [row[:2] + row[3:4] for row in history] == [("ap-2", 2, "running"), ("ap-1", 1, "stopped")]
    assert history[0][4] is None and history[1][4] is not None  # stopped_at
    assert store.deployed_at("ap-2") == history[0][2] and store.deployed_at("ap-1") == history[1][2]
    assert store.last_version("main", "web") == 2


@run_async
async def test_functions_and_their_origin(store, reopen):
    store.create_app("ap-d", "main", "svc", deployed=True)
    store.create_app("ap-e", "main", "tmp")
    handler, job = api_pb2.FunctionDefinition(name="handler"), api_pb2.FunctionDefinition(name="job", timeout=5)
    store.create_function("fn-1", "ap-d", handler)
    store.create_function("fn-2", "ap-e", job)
    assert store.function("fn-1") == ("ap-d", "main", handler) and store.function("fn-2") == ("ap-e", "main", job)
    assert store.function("fn-x") is None
    assert store.function_origin("fn-1") == ("main", "svc", "handler")
    assert store.function_origin("fn-2") is None  # not of a deployed app
    store.stop_app("ap-d")
    await store.durable()

    store = reopen()
    assert store.function_origin("fn-1") == ("main", "svc", "handler")  # even once stopped
    assert store.functions_of_running_apps() == [("fn-2", "ap-e", job)]


# ---- calls, inputs and outputs


@run_async
async def test_calls_inputs_and_outputs(store, reopen):
    store.create_app("ap-1", "main", "app")
    store.create_function("fn-1", "ap-1", api_pb2.FunctionDefinition(name="f"))
    store.create_call("fc-1", "fn-1", None)
    store.add_inputs([("in-0", "fc-1", 0, b"a0"), ("in-1", "fc-1", 1, b"a1"), ("in-2", "fc-1", 2, b"a2")])
    store.add_inputs([("in-1", "fc-1", 1, b"sent again")])  # a retried request: already there
    store.create_call("fc-2", "fn-1", 1)
    store.add_inputs([("in-9", "fc-2", 0, b"b0")])
    store.cancel_call("fc-2")
    await store.durable()
    store.assign_inputs("ct-1", ["in-0", "in-1"])  # rides along with the next transaction
    store.requeue_input("in-2", attempts=1, lost=1, available_at=123.5)
    store.close_call("fc-1", 3)
    await store.durable()

    store = reopen()
    assert store.call("fc-1") == ("fn-1", 3, 0, 1, 0) and store.call("fc-x") is None
    assert sorted(store.open_calls()) == [("fc-1", "fn-1", 3, 0, 1, 0), ("fc-2", "fn-1", 1, 0, 1, 1)]
    assert store.open_inputs("fc-1") == [("in-0", 0, b"a0", 0, 0, "ct-1", 0), ("in-1", 1, b"a1", 0, 0, "ct-1", 0),
                                         ("in-2", 2, b"a2", 1, 1, None, 123.5)]
    store.add_outputs([("fc-1", 1, output("in-1"), 1.0)], ["in-1"], [("fc-1", 1, 2)])
    await store.durable()
    assert store.call("fc-1") == ("fn-1", 3, 1, 2, 0)
    assert [i[0] for i in store.open_inputs("fc-1")] == ["in-0", "in-2"]
    store.add_outputs([("fc-1", 2, output("in-0"), 2.0), ("fc-1", 3, output("in-2"), 2.0)], ["in-0", "in-2"],
                      [("fc-1", 3, 4)])
    await store.durable()

    store = reopen()
    assert store.call("fc-1") == ("fn-1", 3, 3, 4, 0) and store.open_inputs("fc-1") == []
    assert [c[0] for c in store.open_calls()] == ["fc-2"]  # fc-1 is done
    assert store.outputs("fc-1", 0, 2) == [api_pb2.CallOutput(seq=1, output=api_pb2.Output(input_id="in-1")),
                                           api_pb2.CallOutput(seq=2, output=api_pb2.Output(input_id="in-0"))]
    assert [(o.seq, o.output.input_id) for o in store.outputs("fc-1", 2, 2)] == [(3, "in-2")]
    assert store.outputs("fc-1", 3, 2) == []
    store.expire(0.0)  # nothing was done that long ago
    await store.durable()
    assert len(store.outputs("fc-1", 0, 10)) == 3
    store.expire(float("inf"))
    await store.durable()
    assert store.call("fc-1") is None and store.outputs("fc-1", 0, 10) == []
    assert store.call("fc-2") is not None  # not done: never expires


@run_async
async def test_a_done_call_reopens_on_another_version_and_outputs_by_app(store, reopen):
    for app_id, version in (("ap-1", 1), ("ap-2", 2)):
        store.create_app(app_id, "main", "app", deployed=True)
        store.create_function(f"fn-{version}", app_id, api_pb2.FunctionDefinition(name="f"))
    store.create_app("ap-3", "other", "app")  # another workspace's app of the same name
    store.create_function("fn-3", "ap-3", api_pb2.FunctionDefinition(name="f"))
    store.create_call("fc-1", "fn-1", 1)
    store.create_call("fc-3", "fn-3", 1)
    store.add_outputs([("fc-1", 1, output("fc-1:0"), 1.0), ("fc-3", 1, output("fc-3:0"), 1.0)], [],
                      [("fc-1", 1, 2), ("fc-3", 1, 2)])
    await store.durable()
    assert [c[0] for c in store.open_calls()] == []
    store.reopen_call("fc-1", "fn-2", 0)
    store.add_inputs([("fc-1:0", "fc-1", 0, b"again")])
    await store.durable()

    store = reopen()
    assert store.call("fc-1") == ("fn-2", 1, 0, 2, 0)
    assert [c[0] for c in store.open_calls()] == ["fc-1"]
    assert store.app_outputs("main", "app") == [("fc-1", "fn-2", output("fc-1:0"), 1.0)]
    assert store.app_outputs("main", "ap-2") == store.app_outputs("main", "app")
    assert store.app_outputs("main", "ap-1") == [] and store.app_outputs("main", "ap-3") == []
    assert [r[0] for r in store.app_outputs("other", "app")] == ["fc-3"]


@run_async
async def test_calls_of_a_stopped_app_are_not_open(store):
    store.create_app("ap-1", "main", "app")
    store.create_function("fn-1", "ap-1", api_pb2.FunctionDefinition(name="f"))
    store.create_call("fc-1", "fn-1", 1)
    assert [c[0] for c in store.open_calls()] == ["fc-1"]
    store.stop_app("ap-1")
    assert store.open_calls() == []


@run_async
async def test_calls_of_a_superseded_version_stay_open(store, reopen):
    # An older version drains its calls: they are loaded back after a restart, to finish.
    store.create_app("ap-1", "main", "web", deployed=True)
    store.deploy_app("ap-1", 1, None)
    store.create_function("fn-1", "ap-1", api_pb2.FunctionDefinition(name="f"))
    store.create_call("fc-1", "fn-1", 1)
    store.add_inputs([("fc-1:0", "fc-1", 0, b"args")])
    store.create_app("ap-2", "main", "web", deployed=True)
    store.deploy_app("ap-2", 2, "ap-1")
    await store.durable()
    store = reopen()
    assert [c[0] for c in store.open_calls()] == ["fc-1"]
    assert [i[0] for i in store.open_inputs("fc-1")] == ["fc-1:0"]


# ---- workers and containers


@run_async
async def test_workers_and_live_containers(store, reopen):
    Reg = api_pb2.WorkerRegister
    store.upsert_worker(Reg(worker_id="wk-1", boot_id="b1", name="m1", cpu=2, memory_mb=1024), "tk-w")
    store.upsert_worker(Reg(worker_id="wk-1", boot_id="b2", name="m1", cpu=4, memory_mb=2048), "tk-w")
    store.create_container("ct-1", "fn-1", "wk-1", "b2", "hash 1")
    store.create_container("ct-2", "fn-1", "wk-1", "b2", "hash 2")
    store.container_exited("ct-1", "out of memory")
    await store.durable()

    store = reopen()
    assert store.live_containers() == [("ct-2", "fn-1", "wk-1", "b2", "hash 2")]
    assert store.worker_token("wk-1") == "tk-w" and store.worker_token("wk-x") is None
    assert store.ended_containers("main", 10) == []  # fn-1 belongs to no app: no workspace's


@run_async
async def test_ended_containers_newest_first_in_their_workspace(store, reopen):
    store.upsert_worker(api_pb2.WorkerRegister(worker_id="wk-1", boot_id="b1", name="m1", cpu=2, memory_mb=1024), "t")
    for app_id, ws, fid in (("ap-1", "main", "fn-1"), ("ap-2", "other", "fn-2")):
        store.create_app(app_id, ws, f"app-{ws}")
        store.create_function(fid, app_id, api_pb2.FunctionDefinition(name="f"))
    for cid, fid in (("ct-1", "fn-1"), ("ct-2", "fn-1"), ("ct-3", "fn-2"), ("ct-4", "fn-1")):
        store.create_container(cid, fid, "wk-1" if cid != "ct-2" else "wk-gone", "b1", "")
    store.container_exited("ct-1", "exited with code 1")
    await asyncio.sleep(0.01)
    store.container_exited("ct-2", "out of memory")
    await asyncio.sleep(0.01)
    store.container_exited("ct-3", "stopped")
    await store.durable()
    store = reopen()
    rows = store.ended_containers("main", 10)
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[8]) for r in rows] == [
        ("ct-2", "main", "ap-1", "app-main", "fn-1", "wk-gone", "out of memory"),
        ("ct-1", "main", "ap-1", "app-main", "fn-1", "m1", "exited with code 1")]
    assert all(r[6] <= r[7] for r in rows)
    assert [r[0] for r in store.ended_containers(None, 2)] == ["ct-3", "ct-2"]


@run_async
async def test_the_app_of_a_container(store, reopen):
    # `ember container logs ID` finds a container's app by its id alone, after it ended too.
    store.create_app("ap-1", "main", "a")
    store.create_function("fn-1", "ap-1", api_pb2.FunctionDefinition(name="f"))
    store.create_container("ct-1", "fn-1", "wk-1", "b1", "hash 1")
    store.container_exited("ct-1", "exited with code 0")
    await store.durable()
    store = reopen()
    assert store.container_app("ct-1") == "ap-1" and store.container_app("ct-x") is None


# ---- layers, secrets, proxy tokens, schedules


@run_async
async def test_layers(store, reopen):
    store.add_layer(api_pb2.Layer(layer_id="ly-1", blob_id="1" * 64))
    store.add_layer(api_pb2.Layer(layer_id="ly-0", blob_id=""))  # an empty layer
    store.add_layer(api_pb2.Layer(layer_id="ly-1", blob_id="2" * 64))  # rebuilt
    await store.durable()
    assert reopen().layers() == {"ly-0": "", "ly-1": "2" * 64}


@run_async
async def test_blob_grants(store, reopen):
    a, b = "a" * 64, "b" * 64
    store.grant_blob("main", a)
    store.grant_blob("main", a)  # twice is once
    store.grant_blob("other", b)
    await store.durable()
    store = reopen()
    assert store.blob_granted("main", a) and store.blob_granted("other", b)
    assert not store.blob_granted("other", a) and not store.blob_granted("main", b)
    store.grant_blob("other", a)
    store.forget_blob_grants([a])
    await store.durable()
    store = reopen()
    assert not store.blob_granted("main", a) and not store.blob_granted("other", a) and store.blob_granted("other", b)


def test_blobs_put_before_grants_belong_to_their_workspaces(tmp_path):
    before = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, before)
    (before / "0009_blob_grants.sql").unlink()
    db = sqlite3.connect(tmp_path / "ember.db", isolation_level=None)
    migrate(db, before)
    db.execute("INSERT INTO apps (app_id, name, state, created_at, workspace) "
               "VALUES ('ap-1', 'a', 'running', 1, 'w1')")
    db.execute("INSERT INTO functions VALUES ('fn-1', 'ap-1', x'', 1)")
    db.execute("INSERT INTO calls (call_id, function_id, created_at) VALUES ('fc-1', 'fn-1', 1)")
    db.execute("INSERT INTO call_blobs VALUES ('fc-1', ?)", ("1" * 64,))
    db.execute("INSERT INTO objects (object_id, kind, name, created_at, workspace) "
               "VALUES ('vo-1', 'volume', 'v', 1, 'w2')")
    db.execute("INSERT INTO volume_files VALUES ('vo-1', 'f', ?, 1, 420, 1)", ("2" * 64,))
    db.execute("INSERT INTO volume_old_blobs VALUES ('vo-1', 1, ?)", ("3" * 64,))
    migrate(db)
    assert sorted(db.execute("SELECT workspace, blob_id FROM blob_grants")) == [
        ("w1", "1" * 64), ("w2", "2" * 64), ("w2", "3" * 64)]


@run_async
async def test_secrets(store, reopen):
    store.put_secret("sc-1", "main", "api", b"cipher 1", 2)
    store.put_secret("sc-2", "main", "api", b"cipher 2", 3)  # replaces the secret of that name
    store.put_secret("sc-3", "main", None, b"cipher 3", 1)  # anonymous
    store.put_secret("sc-4", "main", "db", b"cipher 4", 1)
    await store.durable()

    store = reopen()
    assert store.secret_by_name("main", "api") == ("sc-2", b"cipher 2") and store.secret_by_name("main", "nope") is None
    assert store.secret_ciphertext("sc-1") is None and store.secret_ciphertext("sc-3") == ("main", b"cipher 3")
    assert [(name, keys) for name, _, keys in store.list_secrets("main")] == [("api", 3), ("db", 1)]
    assert store.delete_secret("main", "api") is True
    assert store.delete_secret("main", "api") is False
    assert store.secret_by_name("main", "api") is None and [s[0] for s in store.list_secrets("main")] == ["db"]
    # A deleted named secret keeps its id and name, not its values; made again, it takes them back.
    await store.durable()
    store = reopen()
    assert store.secret_ciphertext("sc-2") is None and store.deleted_secret("sc-2") == ("main", "api")
    assert store.secret_id_for_name("main", "api") == "sc-2" and store.secret_id_for_name("main", "nope") is None
    assert store.deleted_secret("sc-4") is None and store.deleted_secret("sc-3") is None
    store.put_secret("sc-2", "main", "api", b"cipher 5", 1)
    await store.durable()
    assert store.secret_by_name("main", "api") == ("sc-2", b"cipher 5") and store.deleted_secret("sc-2") is None


@run_async
async def test_proxy_tokens(store, reopen):
    store.add_proxy_token("tk-2", "main", "hash 2", 20.0)
    store.add_proxy_token("tk-1", "b", "hash 1", 10.0)
    await store.durable()
    store = reopen()
    assert store.proxy_tokens() == [("tk-1", "b", "hash 1", 10.0), ("tk-2", "main", "hash 2", 20.0)]  # oldest first
    store.delete_proxy_token("tk-1")
    store.delete_proxy_token("tk-x")
    assert store.proxy_tokens() == [("tk-2", "main", "hash 2", 20.0)]


@run_async
async def test_schedule_runs(store, reopen):
    store.set_schedule_run("main", "app", "hourly", 100.0)
    store.set_schedule_run("main", "app", "daily", 50.0)
    store.set_schedule_run("main", "app", "hourly", 200.0)
    await store.durable()
    assert reopen().schedule_runs() == {("main", "app", "hourly"): 200.0, ("main", "app", "daily"): 50.0}


@run_async
async def test_usage_adds_up_by_the_hour(store, reopen):
    store.add_usage([("ws", "app", "f", 3600.0, 1.5, 2.0, 0.0, 3), ("ws", "app", "g", 3600.0, 1.0, 0.0, 4.0, 1)])
    store.add_usage([("ws", "app", "f", 3600.0, 0.5, 1.0, 0.0, 2), ("ws", "app", "f", 7200.0, 1.0, 1.0, 0.0, 1),
                     ("other", "app", "f", 7200.0, 9.0, 9.0, 9.0, 9)])
    await store.durable()
    store = reopen()
    assert store.usage("ws", 0) == [("ws", "app", "f", 3.0, 4.0, 0.0, 6), ("ws", "app", "g", 1.0, 0.0, 4.0, 1)]
    assert store.usage("ws", 7200.0) == [("ws", "app", "f", 1.0, 1.0, 0.0, 1)]
    assert [row[0] for row in store.usage(None, 0)] == ["other", "ws", "ws"]
    assert store.usage("nobody", 0) == []
    assert store.usage_hours("ws", 0) == [("ws", 3600.0, 3.0, 3.0, 4.0, 6), ("ws", 7200.0, 1.0, 1.0, 0.0, 1)]
    assert store.usage_hours(None, 7200.0) == [("other", 7200.0, 9.0, 9.0, 9.0, 9), ("ws", 7200.0, 1.0, 1.0, 0.0, 1)]


# ---- logs


@run_async
async def test_logs_are_kept_filtered_scoped_and_expired(store, reopen):
    store.create_app("ap-1", "ws", "web", deployed=True)
    def line(seq, t, fn, container, data, fd=1, app="ap-1", ws="ws", call=""):
        return (app, seq, t, ws, "web", fn, container, f"in-{call}" if call else "", fd, data, call)
    store.add_logs([line(1, 100.0, "f", "co-1", "hello 100% sure\n", call="fc-1"),
                    line(2, 101.0, "g", "co-2", "oops\n", fd=2, call="fc-2"),
                    line(3, 102.0, "f", "co-1", "hello again\n", call="fc-1"),
                    line(4, 103.0, "f", "", "ember: scheduled\n")])
    store.add_logs([line(1, 100.0, "f", "co-1", "a retried batch is kept once\n"),
                    line(1, 100.0, "h", "co-9", "another workspace's\n", app="ap-2", ws="other")])
    await store.durable()
    store = reopen()

    def seqs(**kw):
        return [row[1] for row in store.logs("ws", "ap-1", **kw)]
    assert store.logs("ws", "ap-1", limit=1) == [("ap-1", 1, 100.0, "ws", "web", "f", "co-1", "in-fc-1", 1,
                                                  "hello 100% sure\n", "fc-1")]
    assert seqs() == [1, 2, 3, 4] and seqs(after_seq=2) == [3, 4] and seqs(limit=2) == [1, 2]
    assert seqs(function_name="f") == [1, 3, 4] and seqs(container_id="co-2") == [2]
    assert seqs(call_id="fc-1") == [1, 3] and seqs(call_id="fc-1", tail=1) == [3] and seqs(call_id="fc-9") == []
    assert seqs(search="hello") == [1, 3] and seqs(search="0% s") == [1] and seqs(search="_") == []
    assert seqs(since=101.0) == [2, 3, 4] and seqs(until=101.0) == [1, 2] and seqs(since=101, until=102) == [2, 3]
    assert seqs(tail=2) == [3, 4] and seqs(tail=2, function_name="f") == [3, 4] and seqs(tail=9) == [1, 2, 3, 4]
    assert seqs(tail=3, limit=1) == [2]  # the first of the last three: where paging starts
    assert store.logs("other", "ap-1") == [] and store.logs("ws", "ap-2") == []
    assert store.last_log_seq("ap-1") == 4 and store.last_log_seq("ap-3") == 0
    assert store.app_workspace("ap-1") == "ws" and store.app_workspace("ap-2") is None

    store.expire_logs(102.0)
    await store.durable()
    assert seqs() == [3, 4] and store.last_log_seq("ap-2") == 0


# ---- objects: dicts, queues, volumes


@run_async
async def test_objects(store, reopen):
    store.create_object("di-1", "main", "dict", "cfg")
    store.create_object("di-2", "main", "dict", None)  # ephemeral
    store.create_object("qu-1", "main", "queue", "cfg")  # a name is unique per kind only
    store.create_object("vo-1", "main", "volume", "data")
    store.dict_put("di-1", [(b"k", b"v")], False)
    await store.durable()

    store = reopen()
    assert store.find_object("main", "dict", "cfg") == "di-1" and store.find_object("main", "queue", "cfg") == "qu-1"
    assert store.find_object("main", "volume", "cfg") is None
    assert store.object_owner("qu-1") == ("main", "queue") and store.object_owner("xx-1") is None
    assert [(name, oid, size) for name, oid, _, size in store.list_objects("main", "dict")] == [("cfg", "di-1", 1)]
    assert [row[:2] for row in store.list_objects("main", "volume")] == [("data", "vo-1")]
    store.delete_object("di-1")
    await store.durable()
    assert store.find_object("main", "dict", "cfg") is None and store.object_owner("di-1") is None
    assert store.dict_len("di-1") == 0 and store.list_objects("main", "dict") == []


@run_async
async def test_dict_operations(store, reopen):
    store.create_object("di-1", "main", "dict", "d")
    store.create_object("di-2", "main", "dict", None)
    assert store.dict_put("di-1", [(b"a", b"1"), (b"b", b"2"), (b"a\x00", b"3")], False) is True
    assert store.dict_put("di-1", [(b"a", b"9")], True) is False  # skip_if_exists: nothing written
    assert store.dict_get("di-1", b"a") == b"1"
    assert store.dict_put("di-1", [(b"a", b"9"), (b"c", b"4")], True) is True  # c is new
    assert store.dict_put("di-1", [(b"a", b"9")], False) is True
    store.dict_put("di-2", [(b"a", b"other dict")], False)
    await store.durable()

    store = reopen()
    assert store.dict_get("di-1", b"a") == b"9" and store.dict_get("di-1", b"a\x00") == b"3"
    assert store.dict_get("di-1", b"zz") is None and store.dict_get("di-2", b"a") == b"other dict"
    store.dict_delete("di-1", b"b")
    store.dict_delete("di-1", b"zz")
    assert store.dict_len("di-1") == 3
    assert sorted(store.dict_items("di-1")) == [(b"a", b"9"), (b"a\x00", b"3"), (b"c", b"4")]
    store.dict_clear("di-1")
    assert store.dict_len("di-1") == 0 and store.dict_items("di-1") == [] and store.dict_len("di-2") == 1


@run_async
async def test_queue_operations(store, reopen):
    store.create_object("qu-1", "main", "queue", "q")
    assert store.queue_last_seq("qu-1") == 0
    store.queue_put("qu-1", "", 1, [b"a", b"b"])
    store.queue_put("qu-1", "p", 3, [b"c"])
    store.queue_put("qu-1", "", 4, [b"d"])
    await store.durable()

    store = reopen()
    assert store.queue_last_seq("qu-1") == 4
    assert store.queue_len("qu-1", None) == 4 and store.queue_len("qu-1", "") == 3 and store.queue_len("qu-1", "p") == 1
    assert store.queue_peek("qu-1", "", 0, 10) == [(1, b"a"), (2, b"b"), (4, b"d")]
    assert store.queue_peek("qu-1", "", 1, 1) == [(2, b"b")]
    assert store.queue_take("qu-1", "", 2) == [b"a", b"b"]
    await store.durable()

    store = reopen()
    assert store.queue_take("qu-1", "", 5) == [b"d"] and store.queue_take("qu-1", "", 1) == []
    assert store.queue_take("qu-1", "p", 1) == [b"c"]
    store.queue_put("qu-1", "", 5, [b"e"])
    store.queue_put("qu-1", "p", 6, [b"f"])
    store.queue_clear("qu-1", "p")
    assert store.queue_len("qu-1", None) == 1 and store.queue_peek("qu-1", "p", 0, 10) == []
    store.queue_clear("qu-1", None)
    assert store.queue_len("qu-1", None) == 0


@run_async
async def test_volume_commits(store, reopen):
    store.create_object("vo-1", "main", "volume", "data")
    assert store.volume_manifest("vo-1") == (0, [])
    files = [("a.txt", "1" * 64, 3, 0o644, 1.5), ("dir/x", "2" * 64, 1, 0o600, 2.0),
             ("dir/sub/y", "3" * 64, 2, 0o644, 2.0), ("dirty", "4" * 64, 4, 0o755, 3.0)]
    assert store.volume_commit("vo-1", files, []) == 1
    await store.durable()

    store = reopen()
    assert store.volume_manifest("vo-1") == (1, sorted(files))
    # Deleting a directory takes everything under it (not "dirty"); files are added after deletes.
    assert store.volume_commit("vo-1", [("dirty", "5" * 64, 5, 0o644, 4.0)], ["dir", "dirty"]) == 2
    assert store.volume_manifest("vo-1") == (2, [("a.txt", "1" * 64, 3, 0o644, 1.5),
                                                 ("dirty", "5" * 64, 5, 0o644, 4.0)])
    assert store.volume_commit("vo-1", [], ["a.txt"]) == 3
    assert store.volume_manifest("vo-1") == (3, [("dirty", "5" * 64, 5, 0o644, 4.0)])
    store.delete_object("vo-1")
    assert store.volume_manifest("vo-1") == (0, [])


# ---- migrations of the SQLite store

# A database made before numbered migrations and before the apps columns they added by hand.
BEFORE_APP_VERSIONS = """
CREATE TABLE apps (app_id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL,
                   created_at REAL NOT NULL, stopped_at REAL);
CREATE TABLE functions (function_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, definition BLOB NOT NULL,
                        created_at REAL NOT NULL);
"""


def latest_version() -> int:
    return max(int(p.name.split("_", 1)[0]) for p in MIGRATIONS.glob("[0-9]*") if p.suffix in (".sql", ".py"))


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (field numbers below 2048, payloads below 128 bytes)."""
    tag = number << 3 | 2
    return (bytes([tag]) if tag < 128 else bytes([tag & 0x7F | 0x80, tag >> 7])) + bytes([len(payload)]) + payload


# As Ember 0.1 stored them: an image step's and a web endpoint's kind as a string at field 1,
# an output's status numbered from SUCCESS = 0 (here FAILURE = 1, field 3).
OLD_DEFINITION = (api_pb2.FunctionDefinition(name="f").SerializeToString()
                  + _field(13, _field(2, _field(1, b"pip_install") + _field(2, b"numpy")))
                  + _field(21, _field(1, b"fastapi")))
OLD_FAILURE = b"\x18\x01" + _field(5, b"boom")


@pytest.mark.parametrize("legacy", ["before app versions", "just before migrations"])
@run_async
async def test_a_database_from_before_migrations_is_adopted(tmp_path, legacy):
    path = tmp_path / "ember.db"
    db = sqlite3.connect(path)
    # The code just before migrations created the tables of 0001 as they are, on every start.
    old_schema = (BEFORE_APP_VERSIONS if legacy == "before app versions"
                  else (MIGRATIONS / "0001_initial.sql").read_text())
    db.executescript(old_schema)
    db.execute("INSERT INTO apps (app_id, name, state, created_at) VALUES ('ap-1', 'old', 'running', 1.0)")
    db.execute("INSERT INTO functions VALUES ('fn-1', 'ap-1', ?, 1.0)", (OLD_DEFINITION,))
    if legacy == "just before migrations":
        db.execute("INSERT INTO outputs VALUES ('fc-1', 1, ?, 1.0)", (OLD_FAILURE,))
    db.commit()
    db.close()

    store = open_store(path)
    assert store.running_apps() == [("ap-1", "main", "old", 0, 0, "running")]
    Step, Web = api_pb2.ImageStep, api_pb2.WebEndpoint
    definition = api_pb2.FunctionDefinition(name="f", image=api_pb2.Image(steps=[Step(kind=Step.PIP_INSTALL,
                                            args=["numpy"])]), web=Web(kind=Web.FASTAPI))
    assert store.functions_of_running_apps() == [("fn-1", "ap-1", definition)]
    if legacy == "just before migrations":
        [out] = store.outputs("fc-1", 0, 10)
        assert out.output == api_pb2.Output(status=api_pb2.Output.FAILURE, error="boom")
    store.create_app("ap-2", "main", "new", deployed=True)
    store.deploy_app("ap-2", 1, None)
    store.put_secret("sc-1", "main", "s", b"c", 1)  # a table the old database may not have had
    await store.durable()
    store.close()
    store = open_store(path)
    assert store.last_version("main", "new") == 1 and store.secret_by_name("main", "s") == ("sc-1", b"c")
    store.close()
    assert schema_version(sqlite3.connect(path)) == latest_version()


def test_migrations_apply_in_order_each_in_its_own_transaction(tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_first.sql").write_text("CREATE TABLE t (x INTEGER);\nINSERT INTO t VALUES (1);")
    (migrations / "0002_second.sql").write_text("ALTER TABLE t ADD COLUMN y;\nUPDATE t SET y = x + 1;\n"
                                                "CREATE TABLE u (z);\nINSERT INTO missing VALUES (1);")
    db = sqlite3.connect(tmp_path / "db", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="missing"):
        migrate(db, migrations)
    # 0001 stays applied; none of 0002 is.
    assert schema_version(db) == 1 and db.execute("SELECT * FROM t").fetchall() == [(1,)]
    (migrations / "0002_second.sql").write_text("ALTER TABLE t ADD COLUMN y;\nUPDATE t SET y = x + 1;\n"
                                                "-- ends in a comment")
    assert migrate(db, migrations) == 2 and schema_version(db) == 2
    assert db.execute("SELECT x, y FROM t").fetchall() == [(1, 2)]
    assert migrate(db, migrations) == 2  # nothing left to apply
    assert [v for v, _ in db.execute("SELECT * FROM schema_version ORDER BY version")] == [1, 2]
    db.close()


def test_migrations_must_be_numbered_from_one_each_number_once(tmp_path):
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0001_b.sql").write_text("")
    with pytest.raises(StoreError, match="numbered from 1, each number once"):
        migrate(sqlite3.connect(":memory:"), tmp_path)


def test_a_number_handed_out_ahead_is_applied_when_it_comes(tmp_path):
    # Numbers are handed out to changes made side by side: 3 may land before 2.
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x);")
    (tmp_path / "0003_c.sql").write_text("CREATE TABLE c (x);")
    db = sqlite3.connect(tmp_path / "db", isolation_level=None)
    assert migrate(db, tmp_path) == 3
    (tmp_path / "0002_b.sql").write_text("CREATE TABLE b (x);")
    assert migrate(db, tmp_path) == 3
    assert [v for v, _ in db.execute("SELECT * FROM schema_version ORDER BY version")] == [1, 2, 3]
    assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('a', 'b', 'c')").fetchone()[0] == 3


def test_a_database_newer_than_the_code_is_refused(tmp_path):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    (migrations / f"{latest_version() + 1:04d}_future.sql").write_text("CREATE TABLE future (x);")
    path = tmp_path / "ember.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, migrations)  # as a newer Ember would
    db.close()
    with pytest.raises(StoreError, match=f"schema version {latest_version() + 1}.*newer Ember"):
        open_store(path)


def test_store_urls(tmp_path):
    for target in (tmp_path / "a.db", str(tmp_path / "b.db"), f"sqlite://{tmp_path}/c.db"):
        open_store(target).close()
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["a.db", "b.db", "c.db"]
    with pytest.raises(StoreError, match="cannot connect to the database postgresql://ember:\\*\\*\\*@127.0.0.1:9/db"):
        open_store("postgresql://ember:secret@127.0.0.1:9/db?connect_timeout=5")
    with pytest.raises(StoreError, match="unknown store 'mysql'"):
        open_store("mysql://db.example/ember")



# ---- workspaces and tokens


@run_async
async def test_workspaces_and_tokens(store, reopen):
    assert [w[0] for w in store.workspaces()] == ["main"]  # every store has it, without quotas
    assert store.workspaces()[0][2:] == (None, None, None, None)
    store.create_workspace("b")
    store.set_workspace_limits("b", 2, 1.5, 1024, None)
    row = ("tk-1", "hash", "workspace", "b", "ci", 10.0, 20.0, None, None, None)
    store.add_token(row)
    store.add_token(("tk-0", "hash 0", "worker", "", "w", 5.0, None, None, 4.0, 2048))
    store.revoke_token("tk-1", 15.0)
    await store.durable()

    store = reopen()
    assert [w[0] for w in store.workspaces()] == ["b", "main"] and store.workspaces()[0][2:] == (2, 1.5, 1024, None)
    assert store.tokens() == [("tk-0", "hash 0", "worker", "", "w", 5.0, None, None, 4.0, 2048),
                              row[:7] + (15.0,) + row[8:]]  # oldest first


@run_async
async def test_names_are_unique_per_workspace(store, reopen):
    for ws in ("main", "b"):
        store.create_object(f"di-{ws}", ws, "dict", "cfg")
        store.put_secret(f"sc-{ws}", ws, "api", ws.encode(), 1)
        store.create_app(f"ap-{ws}", ws, "web", deployed=True)
        store.deploy_app(f"ap-{ws}", 1, None)
    await store.durable()

    store = reopen()
    assert store.find_object("b", "dict", "cfg") == "di-b" and store.object_owner("di-main") == ("main", "dict")
    assert store.list_objects("b", "dict")[0][:2] == ("cfg", "di-b")
    assert store.secret_by_name("b", "api") == ("sc-b", b"b") and store.secret_ciphertext("sc-main")[0] == "main"
    assert store.last_version("b", "web") == 1 and [r[0] for r in store.app_history("b", "web")] == ["ap-b"]
    assert store.delete_secret("b", "api") and store.secret_by_name("main", "api") == ("sc-main", b"main")


# ---- PostgreSQL's own


def test_both_engines_migrate_to_one_schema(tmp_path):
    """Every migration has its PostgreSQL form: the same tables and columns, whatever their types."""
    open_store(tmp_path / "ember.db").close()
    db = sqlite3.connect(tmp_path / "ember.db")
    tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    sqlite_schema = {t: sorted(row[1] for row in db.execute(f"PRAGMA table_info({t})")) for t in tables}
    versions = sorted(v for (v,) in db.execute("SELECT version FROM schema_version"))
    db.close()
    url = postgres_url()
    open_store(url).close()
    import psycopg
    with psycopg.connect(url) as pg:
        postgres_schema = {}
        for table, column in pg.execute("SELECT table_name, column_name FROM information_schema.columns "
                                        "WHERE table_schema='public'"):
            postgres_schema.setdefault(table, []).append(column)
        assert sorted(v for (v,) in pg.execute("SELECT version FROM schema_version")) == versions
    assert {t: sorted(c) for t, c in postgres_schema.items()} == sqlite_schema


def test_each_engine_takes_its_own_file_where_there_is_one_each_in_its_own_transaction(tmp_path):
    import psycopg

    from ember.server.store.postgres import _Db

    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x BIGINT);")  # both engines read it alike
    (tmp_path / "0002_b.sql").write_text("CREATE TABLE b_sqlite (x BLOB);")
    (tmp_path / "0002_b.postgres.sql").write_text("CREATE TABLE b_postgres (x BYTEA);\nINSERT INTO missing VALUES (1);")
    pg = _Db(postgres_url())
    try:
        with pytest.raises(psycopg.errors.UndefinedTable, match="missing"):
            migrate(pg, tmp_path)
        # 0001 stays applied; none of 0002 is.
        assert schema_version(pg) == 1 and pg.execute("SELECT to_regclass('b_postgres')").fetchone() == (None,)
        (tmp_path / "0002_b.postgres.sql").write_text("CREATE TABLE b_postgres (x BYTEA);")
        assert migrate(pg, tmp_path) == 2
        tables = {t for (t,) in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert tables == {"schema_version", "a", "b_postgres"}
    finally:
        pg.close()
    db = sqlite3.connect(tmp_path / "db", isolation_level=None)
    assert migrate(db, tmp_path) == 2
    assert {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} == {
        "schema_version", "a", "b_sqlite"}
    db.close()


@run_async
async def test_a_statement_postgres_refuses_undoes_its_transaction_and_the_store_goes_on():
    store = open_store(postgres_url())
    try:
        store.create_app("ap-1", "main", "undone")
        failed = []
        store.on_durable(lambda: failed.append("committed"), failed.append)
        store.create_workspace("main")  # there is one: PostgreSQL refuses the whole transaction
        with pytest.raises(Exception, match="duplicate key"):
            await store.durable()
        assert [type(e).__name__ for e in failed] == ["UniqueViolation"]
        assert store.running_apps() == []  # ap-1 went with it
        store.create_app("ap-2", "main", "kept")
        await store.durable()
        assert [a[0] for a in store.running_apps()] == ["ap-2"]
    finally:
        store.close()


@run_async
async def test_a_lost_connection_fails_its_transaction_and_the_next_write_reconnects():
    url = postgres_url()
    store = open_store(url)
    undone = []
    store.on_undone = undone.append  # (a leader steps down on it: leader.py)
    try:
        store.create_app("ap-1", "main", "lost")
        import psycopg
        with psycopg.connect(url, autocommit=True) as admin:  # as if PostgreSQL restarted
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=current_database() "
                          "AND pid != pg_backend_pid()")
        with pytest.raises(StoreUnavailable, match="could not reach the database"):
            await store.durable()
        assert len(undone) == 1 and isinstance(undone[0], psycopg.OperationalError)
        store.create_app("ap-2", "main", "kept")
        await store.durable()
        assert [a[0] for a in store.running_apps()] == ["ap-2"]
    finally:
        store.close()


async def until_committing(store):
    """Let the loop run until the store's commit has begun (SQLite's: and ended)."""
    for _ in range(2):  # the commit runs in the iteration after the writes' (call_later(0))
        await asyncio.sleep(0)
    assert not store.in_transaction


@run_async
async def test_writes_made_while_a_commit_is_on_its_way_join_the_next(store, url):
    other = open_store(url)
    try:
        order = []
        store.create_app("ap-1", "main", "first")
        store.on_durable(lambda: order.append("ap-1"))
        await until_committing(store)  # its commit is sent (PostgreSQL's answer may not have come yet)
        store.create_app("ap-2", "main", "second")
        store.on_durable(lambda: order.append("ap-2"))
        assert sorted(a[0] for a in store.running_apps()) == ["ap-1", "ap-2"]  # reads see both
        await store.durable()
        assert order == ["ap-1", "ap-2"]
        assert sorted(a[0] for a in other.running_apps()) == ["ap-1", "ap-2"]
        store.create_app("ap-3", "main", "third")
        await until_committing(store)
        await store.durable()  # nothing open, a commit on its way: waits for it
        assert "ap-3" in [a[0] for a in other.running_apps()]
    finally:
        other.close()
