"""The frame transport (ember/_transport.py): dicts, queues, .remote() calls and containers'
streams go over it, with TLS where the control plane has TLS; it refuses whoever gRPC refuses;
gRPC takes over where it cannot be reached (or is turned off); and a control plane killed
mid-stream loses nothing it acknowledged.

(tests/test_objects.py runs every dict and queue operation on it too, and the call tests
(test_core.py, test_calls_api.py, test_faults.py, ...) every .remote(): it is the default.)
"""

import asyncio
import contextlib
import inspect
import itertools
import json
import os
import pathlib
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading

import pytest
from conftest import Cluster, environ, free_port, run_py, wait_for
from tcp_proxy import TcpProxy
from test_failover import Pair
from test_restarts import outputs_per_call

import core_app
import frames_app
import restarts_app

import ember
from ember import exception
from ember._client.client import Client
from ember._client.serialization import deserialize, serialize_args
from ember.proto import api_pb2

HEADER = struct.Struct(">IB")  # the frame header, written here by hand: these tests are its other implementation
MESSAGE, HELLO, STATUS, PING, PONG = 0, 1, 2, 3, 4
CODES = {"OK": 0, "INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "PERMISSION_DENIED": 7, "UNIMPLEMENTED": 12,
         "UNAVAILABLE": 14, "UNAUTHENTICATED": 16}
# Run in a client process: its dict, queue and call work, and how many of its sockets reach the frame port.
CLIENT = """
import contextlib, json, os, pathlib, ember, restarts_app
from ember._client.client import Client
from ember.proto import api_pb2
d = ember.Dict.from_name("sub", create_if_missing=True)
d["k"] = [1, 2]
q = ember.Queue.from_name("sub-q", create_if_missing=True)
q.put_many(["a", "b"])
with restarts_app.app.run():
    squared = restarts_app.square.remote(4)
client = Client.from_env()
port = client.run(client.rpc("TransportEndpoint", api_pb2.Empty())).port
print(json.dumps([d["k"], q.get_many(5), squared, connections_to(port)]))
"""


def connections_to(port: int) -> int:
    """How many of this process's TCP connections are established to a port (of 127.0.0.1)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    count = 0
    for line in pathlib.Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
            count += 1
    return count


CLIENT = inspect.getsource(connections_to) + CLIENT


def frame_port() -> int:
    client = Client.from_env()
    return client.run(client.rpc("TransportEndpoint", api_pb2.Empty())).port


def frame(kind: int, msg) -> bytes:
    body = msg.SerializeToString()
    return HEADER.pack(len(body), kind) + body


def opened(port: int, ca_file: pathlib.Path | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    if ca_file:
        sock = ssl.create_default_context(cafile=str(ca_file)).wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def exchange(port: int, data: bytes, ca_file: pathlib.Path | None) -> list[tuple[int, bytes]]:
    """Send raw bytes to the frame port (over TLS, trusting ca_file); the frames until it closes."""
    with opened(port, ca_file) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it closed before taking it all
            sock.sendall(data)
        return received(sock)


def received(sock: socket.socket) -> list[tuple[int, bytes]]:
    """The frames that come until the connection closes."""
    got = b""
    with contextlib.suppress(ConnectionResetError, ssl.SSLEOFError):
        while chunk := sock.recv(1 << 16):
            got += chunk
    frames = []
    while got:
        size, kind = HEADER.unpack_from(got)
        frames.append((kind, got[HEADER.size:HEADER.size + size]))
        got = got[HEADER.size + size:]
    return frames


def status_of(frames) -> tuple[str, str]:
    kind, body = frames[-1]
    assert kind == STATUS, frames
    status = api_pb2.TransportStatus.FromString(body)
    return next(name for name, code in CODES.items() if code == status.code), status.details


def hello(token, method="ObjectStream") -> bytes:
    return frame(HELLO, api_pb2.TransportHello(method=method, token_id=token[0], token_secret=token[1]))


def cli(env, *args) -> str:
    out = subprocess.run([sys.executable, "-m", "ember.cli.main", *args], env=dict(os.environ, **env),
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def tls_plane(tmp_path_factory):
    """A control plane with TLS and a worker, that this process's clients use."""
    c = Cluster(tmp_path_factory.mktemp("frames-tls"))
    c.frames_port = free_port()
    c.start_server(["--tls", "auto", "--frames-port", str(c.frames_port)])
    c.start_worker(env={"EMBER_CA_CERT": str(c.ca_file)})
    with used(c, EMBER_CA_CERT=str(c.ca_file)):
        yield c


@contextlib.contextmanager
def used(c: Cluster, **env):
    """This process's clients use the cluster (with env's variables too); it stops after."""
    try:
        with environ(dict(c.env, **env)):
            yield c
    finally:
        Client.close_url(c.url)
        c.stop()


def test_objects_and_calls_go_over_frames_with_tls(tls_plane):
    d = ember.Dict.from_name("over-frames", create_if_missing=True)
    q = ember.Queue.from_name("over-frames", create_if_missing=True)
    d["k"] = {"v": 1}
    q.put_many([1, 2])
    assert d["k"] == {"v": 1} and q.get_many(5) == [1, 2]
    assert frame_port() == tls_plane.frames_port  # as it was told (--frames-port)
    assert connections_to(frame_port()) == 1  # the object stream, and only it
    with restarts_app.app.run():
        assert restarts_app.square.remote(5) == 25
    assert connections_to(frame_port()) == 2  # and the call stream
    # An error comes back as on gRPC.
    with pytest.raises(exception.NotFoundError, match="no dict named 'absent'"):
        ember.Dict.from_name("absent").get("k")


def test_the_frame_port_refuses_whoever_grpc_refuses(tls_plane):
    c, ca = tls_plane, tls_plane.ca_file
    port = frame_port()
    d = ember.Dict.from_name("a-secrets", create_if_missing=True)
    d["k"] = "a-data"
    admin = (os.environ["EMBER_TOKEN_ID"], os.environ["EMBER_TOKEN_SECRET"])
    cli({}, "workspace", "create", "b")
    b_token = json.loads(cli({}, "token", "new", "--workspace", "b", "--json"))
    b = (b_token["token_id"], b_token["token_secret"])
    worker = json.loads(c.worker_token_file.read_text())
    get = api_pb2.ObjectOp(tag=1, dict=api_pb2.DictRequest(dict_id=d.object_id, op=api_pb2.DictRequest.GET,
                                                           keys=[ember.dict._dumps("k", "key")]))
    clear = api_pb2.ObjectOp(tag=2, dict=api_pb2.DictRequest(dict_id=d.object_id, op=api_pb2.DictRequest.CLEAR))
    ops = frame(MESSAGE, get) + frame(MESSAGE, clear) + frame(STATUS, api_pb2.TransportStatus())

    code, details = status_of(exchange(port, hello(("", "")) + ops, ca))
    assert code == "UNAUTHENTICATED" and "carries no Ember token" in details
    code, details = status_of(exchange(port, hello((admin[0], "guessed")) + ops, ca))
    assert code == "UNAUTHENTICATED" and "not valid" in details
    code, details = status_of(exchange(port, hello((worker["token_id"], worker["token_secret"])) + ops, ca))
    assert code == "PERMISSION_DENIED" and "worker credential" in details
    # Another workspace's token opens a stream, in which A's dict does not exist.
    replies = exchange(port, hello(b) + ops, ca)
    assert status_of(replies) == ("OK", "")
    results = [api_pb2.ObjectOpResult.FromString(body) for kind, body in replies if kind == MESSAGE]
    assert [(r.tag, r.not_found) for r in results] == [(1, True), (2, True)] and "does not exist" in results[0].error
    # What is not this protocol ends the connection, with a reason where there is one.
    assert status_of(exchange(port, frame(MESSAGE, get), ca))[0] == "INVALID_ARGUMENT"
    assert status_of(exchange(port, HEADER.pack(3, HELLO) + b"\xff\xff\xff", ca))[0] == "INVALID_ARGUMENT"
    code, details = status_of(exchange(port, frame(HELLO, api_pb2.TransportHello(
        method="WorkerConnect", token_id=admin[0], token_secret=admin[1])), ca))
    assert code == "UNIMPLEMENTED" and "WorkerConnect" in details
    assert exchange(port, HEADER.pack(1 << 31, HELLO), ca) == []  # a frame over the limit: closed
    # A large frame from whoever has not shown a token is not even read (with the token: UNAUTHENTICATED).
    assert exchange(port, hello((admin[0], "x" * (1 << 20))), ca) == []
    assert status_of(exchange(port, hello((admin[0], "x" * 1000)), ca))[0] == "UNAUTHENTICATED"
    assert exchange(port, hello(admin) + ops, None) == []  # not TLS: no answer
    # A's data is untouched, and the control plane serves on.
    assert d["k"] == "a-data"


def test_a_revoked_token_s_frame_stream_ends_at_its_next_use(tls_plane):
    t = json.loads(cli({}, "token", "new", "--json"))
    d = ember.Dict.from_name("revoked", create_if_missing=True)
    length = frame(MESSAGE, api_pb2.ObjectOp(tag=1, dict=api_pb2.DictRequest(dict_id=d.object_id,
                                                                             op=api_pb2.DictRequest.LEN)))
    with opened(frame_port(), tls_plane.ca_file) as sock:
        sock.sendall(hello((t["token_id"], t["token_secret"])) + length)
        size, kind = HEADER.unpack(sock.recv(HEADER.size))
        assert kind == MESSAGE and api_pb2.ObjectOpResult.FromString(sock.recv(size)).tag == 1
        cli({}, "token", "revoke", t["token_id"])
        sock.sendall(length)
        code, details = status_of(received(sock))
    assert code == "UNAUTHENTICATED" and "revoked" in details


def test_a_blocking_operation_s_own_connection_is_refused_what_the_stream_is(tls_plane):
    # A blocking operation goes over its thread's own frame connection (TLS here): another
    # workspace's token finds nothing of A's there, and a revoked token is refused at its next use.
    d = ember.Dict.from_name("a-own", create_if_missing=True)
    d["k"] = "a-data"
    q = ember.Queue.from_name("a-own", create_if_missing=True)
    q.put("a-item")
    cli({}, "workspace", "create", "b-own")
    b = json.loads(cli({}, "token", "new", "--workspace", "b-own", "--json"))
    before = connections_to(frame_port())
    with environ({"EMBER_TOKEN_ID": b["token_id"], "EMBER_TOKEN_SECRET": b["token_secret"]}):
        theirs, their_q = ember.Dict.from_id(d.object_id), ember.Queue.from_id(q.object_id)
        for attempt in (lambda: theirs["k"], lambda: theirs.put("k", "b-data"), lambda: theirs.clear(),
                        lambda: their_q.get(block=False), lambda: their_q.put("b-item")):
            with pytest.raises(exception.NotFoundError, match="does not exist"):
                attempt()
        assert connections_to(frame_port()) == before + 1  # B's client's own connection, of this thread
    t = json.loads(cli({}, "token", "new", "--json"))
    with environ({"EMBER_TOKEN_ID": t["token_id"], "EMBER_TOKEN_SECRET": t["token_secret"]}):
        mine = ember.Dict.from_id(d.object_id)
        assert mine["k"] == "a-data"
        cli({}, "token", "revoke", t["token_id"])
        with pytest.raises(exception.AuthError, match="revoked"):
            mine["k"] = "after-revocation"
    assert d["k"] == "a-data" and q.len() == 1 and q.get() == "a-item"


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """A plaintext control plane and a worker, for this process's clients and subprocesses."""
    c = Cluster(tmp_path_factory.mktemp("frames"))
    c.start_server()
    c.start_worker()
    with used(c):
        yield c


def test_calls_go_over_frames_and_refuse_another_workspace(plane):
    with restarts_app.app.run():
        square = restarts_app.square
        assert square.remote(3) == 9
        assert connections_to(frame_port()) == 1  # the call stream (no dict or queue used yet)
        fid = square.object_id
        cli({}, "workspace", "create", "b")
        b_token = json.loads(cli({}, "token", "new", "--workspace", "b", "--json"))
        b = (b_token["token_id"], b_token["token_secret"])
        admin = (os.environ["EMBER_TOKEN_ID"], os.environ["EMBER_TOKEN_SECRET"])
        a_call = api_pb2.CallRequest(tag=1, function_id=fid, call_id="fc-of-a",
                                     args=api_pb2.Payload(data=serialize_args("square", (4,), {})))
        with opened(frame_port(), None) as sock:  # (a stream's end would not wait for the output)
            sock.sendall(hello(admin, "CallStream") + frame(MESSAGE, a_call))
            size, kind = HEADER.unpack(sock.recv(HEADER.size, socket.MSG_WAITALL))
            answer = api_pb2.CallResponse.FromString(sock.recv(size, socket.MSG_WAITALL))
        assert answer.tag == 1 and not answer.error and answer.output.output.status == api_pb2.Output.SUCCESS
        # Workspace b: A's function is not there for it, and A's call id (resent or not) gives
        # nothing of A's call: each gets an error, none an output.
        b_calls = [api_pb2.CallRequest(tag=2, function_id=fid, call_id="fc-of-b", args=a_call.args),
                   api_pb2.CallRequest(tag=3, function_id=fid, call_id="fc-of-a", args=a_call.args),
                   api_pb2.CallRequest(tag=4, function_id=fid, call_id="fc-of-a", args=a_call.args, resend=True)]
        replies = exchange(frame_port(), hello(b, "CallStream") + b"".join(frame(MESSAGE, r) for r in b_calls)
                           + frame(STATUS, api_pb2.TransportStatus()), None)
        assert status_of(replies) == ("OK", "")
        answers = {r.tag: r for r in (api_pb2.CallResponse.FromString(body)
                                      for kind, body in replies if kind == MESSAGE)}
        assert sorted(answers) == [2, 3, 4] and not any(r.HasField("output") for r in answers.values())
        assert answers[2].error == f"there is no function with id {fid}"  # as for an id nobody has
        assert all("is taken" in answers[tag].error for tag in (3, 4))
        # A worker's token may not call at all; A's call ran once, for A only.
        worker = json.loads(plane.worker_token_file.read_text())
        code, details = status_of(exchange(frame_port(), hello((worker["token_id"], worker["token_secret"]),
                                                               "CallStream") + frame(MESSAGE, a_call), None))
        assert code == "PERMISSION_DENIED" and "worker credential" in details
        assert outputs_per_call(plane)["fc-of-a"] == 1 and "fc-of-b" not in outputs_per_call(plane)


def test_grpc_takes_over_where_frames_cannot_go(plane):
    proxy_host = "127.0.0.2"  # the frame port is on 127.0.0.1 only: not reachable at the proxy's address
    proxy = TcpProxy(lambda: asyncio.open_connection("127.0.0.1", plane.port), host=proxy_host)
    try:
        out = run_py(CLIENT, {"EMBER_SERVER_URL": proxy.address})
    finally:
        proxy.close()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [[1, 2], ["a", "b"], 16, 0]
    assert "cannot be reached" in out.stderr and "using gRPC" in out.stderr
    # Turned off, and to compare, on.
    for transport, frames in (("grpc", 0), ("frames", 2)):  # (the object stream and the call stream)
        out = run_py(CLIENT, {"EMBER_TRANSPORT": transport})
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.splitlines()[-1]) == [[1, 2], ["a", "b"], 16, frames]
    out = run_py(CLIENT, {"EMBER_TRANSPORT": "fast"})
    assert out.returncode != 0 and "EMBER_TRANSPORT='fast'" in out.stderr


def test_blocking_operations_from_many_threads_each_use_their_own_connection(plane):
    d = ember.Dict.from_name("threads", create_if_missing=True)
    q = ember.Queue.from_name("threads", create_if_missing=True)
    assert q.len() == 0  # (this thread's own connection is open now)
    before = connections_to(frame_port())
    everyone_used_theirs, counted = threading.Barrier(9), threading.Event()
    got, errors = [], []

    def work(t: int):
        try:
            for i in range(50):
                d[(t, i)] = i
                q.put((t, i))
                assert d[(t, i)] == i
                got.append(tuple(q.get(timeout=30)))
        except Exception as e:  # noqa: BLE001 - for the test's thread to report
            errors.append(e)
        everyone_used_theirs.wait(60)
        counted.wait(60)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    everyone_used_theirs.wait(60)
    assert connections_to(frame_port()) == before + 8  # none went through the client's loop
    counted.set()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(got) == [(t, i) for t in range(8) for i in range(50)] and q.len() == 0
    assert all(d[(t, 49)] == 49 for t in range(8))
    assert connections_to(frame_port()) == before  # each closed as its thread ended


def test_a_blocking_operation_broken_mid_way_fails_and_its_thread_goes_on(plane):
    q = ember.Queue.from_name("broken-mid-way", create_if_missing=True)
    empty = ember.Queue.from_name("broken-mid-way-empty", create_if_missing=True)
    q.put("acknowledged")
    before = connections_to(frame_port())
    restarted, outcomes = threading.Event(), []

    def getter():
        try:
            outcomes.append(empty.get(timeout=120))  # waits on the control plane: there is no item
        except exception.ConnectionError as e:
            outcomes.append(e)
        restarted.wait(60)
        outcomes.append(q.get(timeout=60))  # the same thread, on a new connection

    thread = threading.Thread(target=getter)
    thread.start()
    wait_for(lambda: connections_to(frame_port()) == before + 1, what="the getter's own connection")
    plane.kill_server()  # with the get on its way, or waiting there
    wait_for(lambda: outcomes, what="the broken get to fail")
    plane.start_server()
    restarted.set()
    thread.join(60)
    assert isinstance(outcomes[0], exception.ConnectionError) and "may or may not have happened" in str(outcomes[0])
    assert outcomes[1:] == ["acknowledged"]


def test_operations_waiting_on_a_frozen_control_plane_fail_by_the_keepalive(tmp_path):
    # A control plane that froze (SIGSTOP: its sockets stay open, nothing answers) is noticed by
    # the frame connections' pings, as gRPC's keepalive notices it: a get waiting there, on its
    # thread's own connection and on the client loop's stream alike, fails instead of waiting out
    # its two minutes; once the control plane is back, the same thread and loop go on.
    plane = Cluster(tmp_path)  # its own: the module's tests count their connections to theirs
    plane.start_server()
    with used(plane):
        wait_on_a_frozen_control_plane(plane)


def wait_on_a_frozen_control_plane(plane: Cluster):
    q = ember.Queue.from_name("frozen", create_if_missing=True)
    q.len()  # this thread's connection and the client loop's stream are open before the freeze
    asyncio.run(q.len.aio())
    outcomes = {}

    def wait(name, get):
        try:
            outcomes[name] = get()
        except exception.ConnectionError as e:
            outcomes[name] = e

    threads = [threading.Thread(target=wait, args=("blocking", lambda: q.get(timeout=120))),
               threading.Thread(target=wait, args=("loop", lambda: asyncio.run(q.get.aio(timeout=120))))]
    before = connections_to(frame_port())
    for t in threads:
        t.start()
    wait_for(lambda: connections_to(frame_port()) == before + 1, what="the waiting thread's own connection")
    plane.server.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: len(outcomes) == 2, timeout=60, what="both waiting gets to fail")
    finally:
        plane.server.send_signal(signal.SIGCONT)
    for t in threads:
        t.join(30)
    for name in ("blocking", "loop"):
        assert isinstance(outcomes[name], exception.ConnectionError), outcomes
        assert "may or may not have happened" in str(outcomes[name])
    assert "keepalive ping" in str(outcomes["blocking"])
    q.put("after")
    assert q.get(timeout=60) == "after" and asyncio.run(q.len.aio()) == 0


def test_the_frame_port_answers_pings_and_a_gone_getter_takes_nothing(tmp_path):
    # Two gets wait on the control plane for an item, the first one's caller goes (its socket
    # closed: Ctrl-C, a broken connection) while it waits. The item put later goes to the
    # second, not to the connection that is gone (the first in line).
    plane = Cluster(tmp_path)  # its own: the module's tests count this thread's connections to theirs
    plane.start_server()
    with used(plane):
        a_gone_getter_takes_nothing()


def a_gone_getter_takes_nothing():
    q = ember.Queue.from_name("gone-getter", create_if_missing=True).hydrate()
    token = (os.environ["EMBER_TOKEN_ID"], os.environ["EMBER_TOKEN_SECRET"])

    def waiting_get(sock):
        """Have the get wait on the control plane: the answer to the LEN after it says it does."""
        sock.sendall(frame(MESSAGE, api_pb2.ObjectOp(tag=1, queue=api_pb2.QueueRequest(
            queue_id=q.object_id, op=api_pb2.QueueRequest.GET, timeout=120))) + frame(MESSAGE, api_pb2.ObjectOp(
                tag=2, queue=api_pb2.QueueRequest(queue_id=q.object_id, op=api_pb2.QueueRequest.LEN))))
        assert [api_pb2.ObjectOpResult.FromString(body).tag for body in replies(sock, 1)] == [2]

    def replies(sock, n):
        got = []
        for _ in range(n):
            size, kind = HEADER.unpack(sock.recv(HEADER.size, socket.MSG_WAITALL))
            assert kind == MESSAGE
            got.append(sock.recv(size, socket.MSG_WAITALL))
        return got

    with opened(frame_port(), None) as first, opened(frame_port(), None) as second:
        first.sendall(hello(token) + frame(PING, api_pb2.Empty()))  # the keepalive's: answered at once
        assert HEADER.unpack(first.recv(HEADER.size)) == (0, PONG)
        second.sendall(hello(token))
        waiting_get(first)
        waiting_get(second)
        first.close()
        q.put("for whoever is there")
        answer = api_pb2.ObjectOpResult.FromString(replies(second, 1)[0])  # (the socket's timeout: 20 s)
    assert answer.tag == 1 and [deserialize(v, "an item") for v in answer.queue.values] == ["for whoever is there"]
    assert q.len() == 0


def test_a_container_s_stream_goes_over_frames_and_back_after_a_restart(plane):
    with frames_app.app.run():
        before = frames_app.stream_transport.remote()
        port = frame_port()
        assert before["frames"] == f"127.0.0.1:{port}"  # as its worker was told, at register
        assert before["connections"] == 1  # its runtime's stream (it has no dict, queue or call)
        # Killed mid-stream, the control plane comes back on another frame port: the same
        # container's stream finds it (it asks where, over gRPC) and goes on on frames.
        plane.kill_server()
        plane.start_server()
        after = frames_app.stream_transport.remote()
    assert frame_port() != port and after["pid"] == before["pid"]
    assert after["frames"] == f"127.0.0.1:{frame_port()}" and after["connections"] == 1


def test_a_worker_on_grpc_gives_its_containers_grpc(tmp_path):
    c = Cluster(tmp_path)
    c.start_server()
    c.start_worker(env={"EMBER_TRANSPORT": "grpc"})  # the one switch, on the worker: its containers follow
    with used(c):
        with frames_app.app.run():
            got = frames_app.stream_transport.remote()
        with core_app.app.run():  # and a container killed mid-input there: its input runs again
            assert core_app.flaky.remote(str(tmp_path / "k"), 1, "kill") == 2
    assert got["frames"] == "" and got["connections"] == 0


class Writes:
    """Four threads writing to a dict and a queue over the client's object stream, until stopped:
    what was acknowledged, and what was in flight when the stream broke (it may or may not have
    happened)."""

    def __init__(self, name: str):
        self.d = ember.Dict.from_name(name, create_if_missing=True)
        self.q = ember.Queue.from_name(name, create_if_missing=True)
        self.acked, self.unsure, self.stop = [], [], threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(w,)) for w in range(4)]
        for t in self.threads:
            t.start()

    def _write(self, w: int):
        for i in range(1_000_000):
            if self.stop.is_set():
                return
            item = (w, i)
            try:
                self.d[item] = i
                self.q.put(item)
                self.acked.append(item)
            except exception.ConnectionError:
                self.unsure.append(item)

    def more(self, n: int, what: str):
        """Wait for n more acknowledged writes."""
        now = len(self.acked)
        wait_for(lambda: len(self.acked) >= now + n, what=what)

    def check(self):
        """Stop; every acknowledged write is there, once, and nothing that was not written."""
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert self.unsure, "no write was in flight when the stream broke: the test proved nothing"
        got = []
        while batch := self.q.get_many(1000, block=False):
            got += [tuple(item) for item in batch]
        assert len(got) == len(set(got))
        assert set(self.acked) <= set(got) <= set(self.acked) | set(self.unsure)
        assert all(self.d[item] == item[1] for item in self.acked)


class Calls:
    """Two threads calling a function with .remote() until stopped; each call's argument, the
    result it returned (or its error), and whether it was in flight across a restart."""

    def __init__(self, log: str):
        self.log = log
        self.results, self.errors, self.across = {}, [], 0
        self.numbers = itertools.count()
        self.killed, self.stop = threading.Event(), threading.Event()
        self.threads = [threading.Thread(target=self._call) for _ in range(2)]
        for t in self.threads:
            t.start()

    def _call(self):
        while not self.stop.is_set():
            i = next(self.numbers)
            before_kill = not self.killed.is_set()
            try:
                self.results[i] = restarts_app.record.remote(i, self.log)
            except Exception as e:  # none is expected: a call in flight is sent again
                self.errors.append((i, e))
            self.across += before_kill and self.killed.is_set()

    def check(self, plane: Cluster):
        """Stop; every call returned its own result, and each is one call, run, with one output."""
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not self.errors
        assert self.across, "no call was in flight when the control plane was killed: the test proved nothing"
        assert self.results == {i: i * i for i in self.results}
        assert set(restarts_app.runs(self.log)) == set(self.results)
        assert set(outputs_per_call(plane).values()) == {1}


def test_a_control_plane_killed_mid_stream_loses_nothing_it_acknowledged(plane, tmp_path):
    with restarts_app.app.run():
        writes, calls = Writes("acked"), Calls(str(tmp_path / "ran"))
        try:
            writes.more(200, "writes over frames")
            wait_for(lambda: len(calls.results) >= 20, what="calls over frames")
            before = frame_port()
            assert connections_to(before) == 5  # each writer thread's object stream, and the call stream
            calls.killed.set()
            plane.kill_server()
            plane.start_server()
            writes.more(200, "writes after the restart")
            done = len(calls.results)
            wait_for(lambda: len(calls.results) >= done + 20, what="calls after the restart")
        finally:
            writes.check()
            calls.check(plane)
        after = frame_port()
        # Back on frames, at the new port: the call stream, and this thread's object stream
        # (writes.check()'s reads); the writers' closed as their threads ended.
        assert after != before and connections_to(after) == 2


def test_a_killed_leader_s_clients_go_on_at_the_new_leader_on_frames(tmp_path):
    pair = Pair(tmp_path)
    pair.start_servers()
    with used(pair):
        writes = Writes("failover")
        try:
            writes.more(200, "writes at the first leader")
            assert connections_to(frame_port()) == 4  # each writer thread's own object stream
            pair.servers[0].send_signal(signal.SIGKILL)  # mid-stream: the standby takes over its lease
            writes.more(200, "writes at the new leader")
        finally:
            writes.check()
        assert pair.leader()[0].endswith(str(pair.ports[1]))
        assert connections_to(frame_port()) == 1  # on frames there too (this thread's, of writes.check())


# ---- frames over a unix socket (a control plane listening on one: the embedded local cluster's)

def frames_path() -> str:
    client = Client.from_env()
    return client.run(client.rpc("TransportEndpoint", api_pb2.Empty())).unix_path


def frame_connections_at(path: str) -> int:
    """How many connections the frame server on the unix socket `path` holds now: its accepted
    sockets carry the socket's path (/proc/net/unix), in state 03, connected."""
    rows = (line.split() for line in pathlib.Path("/proc/net/unix").read_text().splitlines()[1:])
    return sum(1 for row in rows if len(row) == 8 and row[7] == path and row[5] == "03")


def unix_exchange(path: str, data: bytes) -> list[tuple[int, bytes]]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return received(sock)


@pytest.fixture(scope="module")
def unix_plane(tmp_path_factory):
    """A control plane on a unix socket, and a worker, for this process's clients."""
    c = Cluster(tmp_path_factory.mktemp("frames-unix"), store="unix")
    c.start_server()
    c.start_worker()
    with used(c):
        yield c


def test_frames_on_a_unix_socket_refuse_whoever_grpc_refuses(unix_plane):
    path = frames_path()
    grpc_socket = unix_plane.url.removeprefix("unix:")
    assert path == grpc_socket + ".frames" and os.stat(path).st_mode == os.stat(grpc_socket).st_mode
    d = ember.Dict.from_name("a-secrets", create_if_missing=True)
    d["k"] = "a-data"
    assert frame_connections_at(path) == 1  # this process's object stream is on it
    admin = (os.environ["EMBER_TOKEN_ID"], os.environ["EMBER_TOKEN_SECRET"])
    cli({}, "workspace", "create", "b")
    b_token = json.loads(cli({}, "token", "new", "--workspace", "b", "--json"))
    worker = json.loads(unix_plane.worker_token_file.read_text())
    get = api_pb2.ObjectOp(tag=1, dict=api_pb2.DictRequest(dict_id=d.object_id, op=api_pb2.DictRequest.GET,
                                                           keys=[ember.dict._dumps("k", "key")]))
    clear = api_pb2.ObjectOp(tag=2, dict=api_pb2.DictRequest(dict_id=d.object_id, op=api_pb2.DictRequest.CLEAR))
    ops = frame(MESSAGE, get) + frame(MESSAGE, clear) + frame(STATUS, api_pb2.TransportStatus())

    # Reaching the socket proves nobody's identity: the same token check as on TCP.
    code, details = status_of(unix_exchange(path, hello(("", "")) + ops))
    assert code == "UNAUTHENTICATED" and "carries no Ember token" in details
    code, details = status_of(unix_exchange(path, hello((admin[0], "guessed")) + ops))
    assert code == "UNAUTHENTICATED" and "not valid" in details
    code, details = status_of(unix_exchange(path, hello((worker["token_id"], worker["token_secret"])) + ops))
    assert code == "PERMISSION_DENIED" and "worker credential" in details
    replies = unix_exchange(path, hello((b_token["token_id"], b_token["token_secret"])) + ops)
    assert status_of(replies) == ("OK", "")
    results = [api_pb2.ObjectOpResult.FromString(body) for kind, body in replies if kind == MESSAGE]
    assert [(r.tag, r.not_found) for r in results] == [(1, True), (2, True)]
    assert unix_exchange(path, hello((admin[0], "x" * (1 << 20)))) == []  # not read before a token is proved
    assert d["k"] == "a-data"  # A's data untouched; and with A's token, the stream works
    replies = unix_exchange(path, hello(admin) + ops)
    assert status_of(replies) == ("OK", "")
    assert [r.tag for r in (api_pb2.ObjectOpResult.FromString(b) for k, b in replies if k == MESSAGE)] == [1, 2]
    assert len(d) == 0


def test_the_embedded_local_cluster_serves_and_uses_frames(tmp_path):
    script = """
import json, pathlib, ember
from ember._client.client import Client
from ember.proto import api_pb2
""" + inspect.getsource(frames_path) + inspect.getsource(frame_connections_at) + """
app = ember.App("embedded")
@app.function()
def inc(x):
    return x + 1
with app.run():  # no server configured: the embedded local cluster
    d = ember.Dict.from_name("embedded", create_if_missing=True)
    d["k"] = inc.remote(1)
    print(json.dumps([d["k"], frame_connections_at(frames_path())]))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("EMBER_SERVER_URL", "EMBER_TOKEN_ID", "EMBER_TOKEN_SECRET")}
    env["EMBER_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    # The call stream, this thread's own object connection and the container's stream, on frames.
    assert json.loads(out.stdout.splitlines()[-1]) == [2, 3]


def test_a_map_on_frames_outlives_a_killed_control_plane_and_is_its_workspace_s_own(tmp_path):
    log = str(tmp_path / "ran")
    n = 300
    (tmp_path / "plane").mkdir()
    plane = Cluster(tmp_path / "plane")  # its own: the module's is killed and restarted by others before
    plane.start_server()
    plane.start_worker()
    with used(plane), restarts_app.app.run():
        got: dict = {}

        def mapping():
            try:
                got["results"] = list(restarts_app.record.map(range(n), [log] * n, [0.01] * n))
            except Exception as e:  # noqa: BLE001 - none is expected: what was in flight is sent again
                got["error"] = e

        thread = threading.Thread(target=mapping)
        thread.start()
        wait_for(lambda: len(restarts_app.runs(log)) >= 20, what="the map's first inputs")
        assert connections_to(frame_port()) == 1  # the map's stream (no .remote(), dict or queue yet)
        assert thread.is_alive(), "the map ended before the control plane was killed: the test proved nothing"
        plane.kill_server()
        plane.start_server()
        thread.join(120)
        assert "error" not in got, got.get("error")
        assert got["results"] == [i * i for i in range(n)]  # all of them, in order
        assert set(restarts_app.runs(log)) == set(range(n))
        assert n in outputs_per_call(plane).values()  # one output each, none twice
        # Another workspace neither reads the call's outputs nor adds to its inputs over MapStream.
        call = restarts_app.square.spawn_map(range(3))
        assert call.get(index=2) == 4
        cli({}, "workspace", "create", "m")
        b_token = json.loads(cli({}, "token", "new", "--workspace", "m", "--json"))
        requests = [api_pb2.MapRequest(tag=1, get=api_pb2.GetOutputsRequest(call_id=call.object_id, timeout=0)),
                    api_pb2.MapRequest(tag=2, put=api_pb2.PutInputsRequest(call_id=call.object_id, inputs=[
                        api_pb2.Input(idx=3, args=api_pb2.Payload(data=serialize_args("square", (9,), {})))]))]
        answers = {}
        with opened(frame_port(), None) as sock:  # (a stream's end would not wait for the answers)
            sock.sendall(hello((b_token["token_id"], b_token["token_secret"]), "MapStream")
                         + b"".join(frame(MESSAGE, r) for r in requests))
            while len(answers) < len(requests):
                size, kind = HEADER.unpack(sock.recv(HEADER.size, socket.MSG_WAITALL))
                assert kind == MESSAGE
                answer = api_pb2.MapResponse.FromString(sock.recv(size, socket.MSG_WAITALL))
                answers[answer.tag] = answer
        NOT_FOUND = 5  # gRPC's code, as FunctionCallGetOutputs and FunctionCallPutInputs answer
        assert answers[1].code == NOT_FOUND and "there is no function call" in answers[1].details
        assert answers[2].code == NOT_FOUND and not answers[1].HasField("outputs")
        assert call.num_inputs() == 3
