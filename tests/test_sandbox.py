"""ember.Sandbox on a real cluster: created, driven (stdin, streamed output, many execs), found
again from other processes, ended by its command, terminate, timeouts and its worker's loss;
another workspace's token reaches none of it; on the container backend, isolated and limited."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import textwrap
import threading
import time

import grpc
import pytest

import ember
from ember import exception
from ember._client.auth import metadata
from ember._client.client import Client
from ember.proto import api_pb2, api_pb2_grpc
from conftest import PY, ROOT, free_port, module_cluster, wait_for

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("sandbox")) as c:
        yield c


@pytest.fixture(scope="module")
def app(cluster):
    return ember.App.lookup("sandboxes", create_if_missing=True)


def cli(*args, env=None, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env=dict(os.environ, **(env or {})))
    assert out.returncode == 0 or not check, out.stderr
    return out


def sdk(code: str, env=None):
    """Run code in another process with the SDK; its last line printed is JSON."""
    out = subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env=dict(os.environ, **(env or {})))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_its_command_reads_stdin_and_its_output_streams_as_produced(app):
    t0 = time.perf_counter()
    sb = ember.Sandbox.create("python3", "-u", "-c", "import sys\nprint('ready')\nfor line in sys.stdin:\n"
                              "    print(line.strip().upper())\nprint('bye', file=sys.stderr)\nsys.exit(3)",
                              app=app, timeout=60)
    lines = iter(sb.stdout)
    # The command waits for stdin: its first line can only be here if output streams as produced.
    assert next(lines) == "ready\n"
    print(f"Sandbox.create() to its command's first line: {(time.perf_counter() - t0) * 1000:.0f} ms")
    assert sb.poll() is None and sb.returncode is None
    sb.stdin.write(b"hello\n")
    sb.stdin.write("world\n")
    sb.stdin.write_eof()
    sb.stdin.drain()
    assert list(lines) == ["HELLO\n", "WORLD\n"]
    assert sb.stderr.read() == "bye\n"
    sb.wait()  # it exited by itself: nothing raised
    assert sb.returncode == 3 and sb.poll() == 3
    with pytest.raises(exception.SandboxTerminatedError, match=f"sandbox {sb.object_id} has ended"):
        sb.exec("true")
    # Its output is kept: a reader that comes later reads it from its start.
    assert ember.Sandbox.from_id(sb.object_id).stdout.read() == "ready\nHELLO\nWORLD\n"


def test_many_execs_at_once_with_env_workdir_stdin_and_a_missing_command(app):
    sb = ember.Sandbox.create(app=app, timeout=60, env={"WHO": "sandbox"}, workdir="/tmp",
                              secrets=[ember.Secret.from_dict({"TOKEN": "from-its-secret", "WHO": "overridden"})])

    async def many():
        procs = await asyncio.gather(*(sb.exec.aio("sh", "-c", "sleep 0.5; echo $WHO $N; pwd", env={"N": str(i)})
                                       for i in range(8)))
        outs = await asyncio.gather(*(p.stdout.read.aio() for p in procs))
        codes = await asyncio.gather(*(p.wait.aio() for p in procs))
        return outs, codes

    t0 = time.perf_counter()
    outs, codes = asyncio.run(many())
    print(f"8 execs of `sleep 0.5` at once: {time.perf_counter() - t0:.2f} s")
    assert outs == [f"sandbox {i}\n/tmp\n" for i in range(8)] and codes == [0] * 8
    p = sb.exec("cat", workdir="/", text=False)
    p.stdin.write(b"\x00binary\xff")
    p.stdin.write_eof()
    p.stdin.drain()
    assert p.stdout.read() == b"\x00binary\xff" and p.wait() == 0 and p.returncode == 0
    p = sb.exec("sh", "-c", "echo $TOKEN $EXTRA", secrets=[ember.Secret.from_dict({"EXTRA": "from-the-exec"})])
    assert p.stdout.read() == "from-its-secret from-the-exec\n"
    assert sb.exec("sh", "-c", "tty", pty=True).stdout.read().startswith("/dev/pts/")  # a terminal of its own
    late = sb.exec("sh", "-c", "sleep 30", timeout=0.5)
    assert late.wait() == 124 and "timeout of 0.5s" in late.stderr.read()
    missing = sb.exec("no-such-command-here", "x")
    assert missing.wait() == 127  # as a shell's, and Modal's
    assert "no-such-command-here" in missing.stderr.read()
    assert sb.poll() is None  # execs do not end it
    sb.terminate()
    with pytest.raises(exception.SandboxTerminatedError, match="was terminated"):
        sb.wait()
    assert sb.returncode == 137


def test_its_command_and_execs_run_before_its_containers_runtime_connects(app, tmp_path):
    """A sandbox's container runs no function: its command and execs go to its worker with its
    start and run once the container is started, not once Ember's runtime in it connected
    (held up here for two minutes at its interpreter's start)."""
    held = tmp_path / "held"
    held.mkdir()
    (held / "sitecustomize.py").write_text("import time\ntime.sleep(120)\n")
    image = ember.Image.debian_slim().env({"PYTHONPATH": str(held)})
    t0 = time.perf_counter()
    sb = ember.Sandbox.create("sh", "-c", "echo main; sleep 600", app=app, image=image, timeout=60)
    p = sb.exec("echo", "hi")
    assert p.stdout.read() == "hi\n" and p.wait() == 0
    print(f"Sandbox.create() to the end of exec `echo hi`: {(time.perf_counter() - t0) * 1000:.0f} ms")
    assert next(iter(sb.stdout)) == "main\n"
    client = Client.from_env()
    listed = client.run(client.rpc("ContainerList", api_pb2.ContainerListRequest(app_id=app.app_id))).containers
    assert [c.state for c in listed if c.container_id == sb._info.container_id] == [api_pb2.CONTAINER_STATE_STARTING]
    # `ember container exec` into it waits likewise (a function's starting container it refuses).
    assert cli("container", "exec", sb._info.container_id, "--", "echo", "from-the-cli").stdout == "from-the-cli\n"
    sb.terminate()
    with pytest.raises(exception.SandboxTerminatedError, match="was terminated"):
        sb.wait()


def test_a_sandbox_outlives_its_client_and_is_found_by_id_name_tags_and_the_cli(cluster, app):
    made = sdk("""
        import ember, json
        app = ember.App.lookup("sandboxes")
        sb = ember.Sandbox.create("sh", "-c", "echo started; sleep 600", app=app, name="keeper", timeout=120)
        sb.set_tags({"owner": "agent-7"})
        assert next(iter(sb.stdout)) == "started\\n"
        print(json.dumps(sb.object_id))
    """)  # and that client is gone
    sb = ember.Sandbox.from_name("sandboxes", "keeper")
    assert sb.object_id == made and sb.poll() is None
    assert sb.get_tags() == {"owner": "agent-7"}
    assert [s.object_id for s in ember.Sandbox.list(tags={"owner": "agent-7"})] == [made]
    assert [s.object_id for s in ember.Sandbox.list(tags={"owner": "someone-else"})] == []
    assert made in [s.object_id for s in ember.Sandbox.list(app_id=app.app_id)]
    assert ember.Sandbox.from_id(made).stdout is not None
    with pytest.raises(exception.AlreadyExistsError, match="keeper"):
        ember.Sandbox.create(app=app, name="keeper")
    rows = {r["sandbox_id"]: r for r in json.loads(cli("sandbox", "list", "--json").stdout)}
    assert rows[made]["state"] == "running" and rows[made]["name"] == "keeper" and rows[made]["app"] == "sandboxes"
    assert f"{made}\tsandboxes\tkeeper\trunning\t-\tw1\t" in cli("sandbox", "list").stdout  # for scripts: tabs
    out = cli("sandbox", "exec", "-T", made, "--", "sh", "-c", "echo in $0; exit 4", check=False)
    assert out.returncode == 4 and out.stdout == "in sh\n"
    assert cli("sandbox", "stop", made).stdout == f"stopped sandbox {made}\n"
    with pytest.raises(exception.SandboxTerminatedError, match=f"sandbox {made} was terminated"):
        sb.wait()
    out = cli("sandbox", "exec", made, "--", "true", check=False)
    assert out.returncode == 1 and "has ended" in out.stderr
    assert json.loads(cli("sandbox", "list", "--json").stdout)[-1]["state"] == "ended"
    assert ember.Sandbox.from_name("sandboxes", "keeper").returncode == 137


def test_timeout_and_idle_timeout_end_it(app):
    sb = ember.Sandbox.create(app=app, timeout=2)
    with pytest.raises(exception.SandboxTimeoutError, match="passed its timeout of 2s"):
        sb.wait()
    assert sb.returncode == 124
    idle = ember.Sandbox.create(app=app, timeout=60, idle_timeout=1.5)
    # A running exec keeps it busy past its idle timeout; once none runs, it ends.
    assert idle.exec("sh", "-c", "sleep 3; echo done").stdout.read() == "done\n"
    with pytest.raises(exception.SandboxTimeoutError, match="idle timeout of 1.5s"):
        idle.wait()
    assert idle.returncode == 124
    idle.wait(raise_on_termination=False)  # says nothing, once asked not to


def test_wait_until_ready_runs_its_readiness_probe_and_detach_lets_it_run_on(app):
    port = free_port()  # (the process backend shares the machine's loopback)
    # The server listens only after a second: the TCP probe is tried until it does.
    serve = (f"import socket, time; time.sleep(1); s = socket.create_server(('127.0.0.1', {port}))\n"
             "while True: s.accept()[0].close()")
    sb = ember.Sandbox.create("python3", "-c", serve, app=app, timeout=60,
                              readiness_probe=ember.Probe.with_tcp(port, interval_ms=50))
    assert sb.poll() is None
    sb.wait_until_ready(timeout=30)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # it listens
    # An exec probe: ready once the command exits 0; one that never does times out naming the probe.
    marked = ember.Sandbox.create("sh", "-c", "sleep 1; touch /tmp/ready-$$; sleep 60", app=app, timeout=60,
                                  readiness_probe=ember.Probe.with_exec("sh", "-c", "ls /tmp/ready-*"))
    marked.wait_until_ready(timeout=30)
    never = ember.Sandbox.create(app=app, timeout=60, readiness_probe=ember.Probe.with_exec("false"))
    with pytest.raises(exception.TimeoutError, match="readiness probe.*did not succeed within 1s"):
        never.wait_until_ready(timeout=1)
    with pytest.raises(exception.InvalidError, match="no readiness probe"):
        ember.Sandbox.from_id(sb.object_id).wait_until_ready()
    with pytest.raises(exception.InvalidError, match="pass an ember.Probe"):
        ember.Sandbox.create(app=app, readiness_probe=8000)
    with pytest.raises(exception.InvalidError, match="TCP port"):
        ember.Probe.with_tcp(0)
    # Detached, it runs on, and is found again by its id.
    never.detach()
    again = ember.Sandbox.from_id(never.object_id)
    assert again.poll() is None and again.exec("echo", "on").stdout.read() == "on\n"
    for sandbox in (sb, marked, again):
        sandbox.terminate()
    with pytest.raises(exception.InvalidError, match="not supported by Ember.*snapshot_filesystem"):
        again.snapshot_directory("/tmp")


def test_a_sandbox_of_a_running_app_ends_with_it(cluster):
    app = ember.App("short-lived")
    with app.run():
        sb = ember.Sandbox.create("sleep", "600", app=app, timeout=60)
        assert sb.exec("echo", "up").stdout.read() == "up\n"
    with pytest.raises(exception.SandboxTerminatedError, match="its app.*stopped"):
        sb.wait()
    assert sb.returncode == 137


def test_a_function_drives_sandboxes_of_its_own_app(cluster):
    import sandbox_app
    with sandbox_app.app.run():
        assert sandbox_app.make_and_use.remote() == ["from the main command\n", 0, "from an exec\n"]


def test_bad_input_is_refused_with_the_cause(app):
    with pytest.raises(exception.InvalidError, match="pass app="):
        ember.Sandbox.create("true")
    with pytest.raises(exception.InvalidError, match="timeout"):
        ember.Sandbox.create(app=app, timeout=0)
    with pytest.raises(exception.InvalidError, match="workdir"):
        ember.Sandbox.create(app=app, workdir="relative")
    with pytest.raises(exception.InvalidError, match="h2_ports= is not supported"):
        ember.Sandbox.create(app=app, h2_ports=[8000])
    with pytest.raises(exception.NotFoundError, match="no sandbox"):
        ember.Sandbox.from_id("sb-nothing")
    with pytest.raises(exception.NotFoundError, match="no sandbox named 'nobody'"):
        ember.Sandbox.from_name("sandboxes", "nobody")


def test_a_snapshot_needs_the_container_backend(app):
    sb = ember.Sandbox.create(app=app, timeout=60)
    with pytest.raises(exception.ExecutionError,
                       match="filesystem needs the container backend.*runs the process backend"):
        sb.snapshot_filesystem()
    assert sb.exec("echo", "still up").stdout.read() == "still up\n"
    sb.terminate()


def test_another_workspace_reaches_none_of_it_and_its_own_quota_holds(cluster, app):
    sb = ember.Sandbox.create("sleep", "600", app=app, timeout=120)
    sb.exec("true").wait()  # running, on a container
    info = sb._info
    cli("workspace", "create", "other")
    cli("workspace", "set", "other", "--max-containers", "1")
    token = json.loads(cli("token", "new", "--workspace", "other", "--json").stdout)
    other = {"EMBER_TOKEN_ID": token["token_id"], "EMBER_TOKEN_SECRET": token["token_secret"]}
    channel = grpc.insecure_channel(cluster.url)
    stub = api_pb2_grpc.ClientApiStub(channel)
    md = metadata((token["token_id"], token["token_secret"]))

    def code(name, request):
        try:
            result = getattr(stub, name)(request, metadata=md, timeout=30)
            if name == "SandboxOutput":
                next(iter(result))
        except grpc.RpcError as e:
            return e.code()
        return None

    ref = info.sandbox_id
    small = api_pb2.FunctionDefinition(resources=api_pb2.Resources(cpu=0.125, memory_mb=128))
    for name, request in [("SandboxGet", api_pb2.SandboxGetRequest(sandbox_id=ref)),
                          ("SandboxGet", api_pb2.SandboxGetRequest(app_name="sandboxes", name="keeper")),
                          ("SandboxWait", api_pb2.SandboxWaitRequest(sandbox_id=ref)),
                          ("SandboxTerminate", api_pb2.SandboxRef(sandbox_id=ref)),
                          ("SandboxSetTags", api_pb2.SandboxSetTagsRequest(sandbox_id=ref, tags={"x": "y"})),
                          ("SandboxStdin", api_pb2.SandboxStdinRequest(sandbox_id=ref, data=b"x")),
                          ("SandboxOutput", api_pb2.SandboxOutputRequest(sandbox_id=ref, fd=1)),
                          ("SandboxSnapshotFilesystem", api_pb2.SandboxSnapshotRequest(sandbox_id=ref, timeout=5)),
                          ("SandboxCreate", api_pb2.SandboxCreateRequest(app_id=info.app_id, timeout=10,
                                                                     definition=small))]:
        assert code(name, request) == Code.NOT_FOUND, name
    exec_start = api_pb2.ContainerExecRequest(start=api_pb2.ExecStart(container_id=info.container_id, argv=["id"]))
    with pytest.raises(grpc.RpcError) as e:
        next(iter(stub.ContainerExec(iter([exec_start]), metadata=md, timeout=30)))
    assert e.value.code() == Code.NOT_FOUND
    assert stub.SandboxList(api_pb2.SandboxListRequest(), metadata=md, timeout=30).sandboxes == []
    channel.close()
    # Its own sandboxes: one, as its quota allows, then a refusal that names the quota.
    got = sdk("""
        import ember, json
        app = ember.App.lookup("mine", create_if_missing=True)
        sb = ember.Sandbox.create(app=app, timeout=60)
        try:
            ember.Sandbox.create(app=app, timeout=60)
            refused = ""
        except ember.exception.ResourceExhaustedError as e:
            refused = str(e)
        out = sb.exec("echo", "mine").stdout.read()
        print(json.dumps([refused, out, [s.object_id for s in ember.Sandbox.list()] == [sb.object_id]]))
        sb.terminate()
    """, env=other)
    assert "quota of 1 containers" in got[0] and got[1:] == ["mine\n", True]
    assert sb.poll() is None  # untouched
    def used() -> bool:  # accounted as any container: the memory it held, for as long
        rows = json.loads(cli("usage", "--json", "--workspace", "other").stdout)
        return bool(rows) and rows[0]["memory_gib_seconds"] > 0
    wait_for(used, what="the other workspace's usage to count its sandbox")
    sb.terminate()


def test_a_lost_worker_fails_its_sandbox_naming_it(cluster, app):
    """Last here: it kills the module's worker."""
    sb = ember.Sandbox.create("sleep", "600", app=app, timeout=120)
    p = sb.exec("sleep", "600")
    worker = cluster.workers[0]
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    with pytest.raises(exception.SandboxTerminatedError, match=f"sandbox {sb.object_id}.*lost"):
        sb.wait()
    assert sb.returncode == 137
    assert p.wait() == 137 and "ember:" in p.stderr.read()  # cut short, saying why
    with pytest.raises(exception.SandboxTerminatedError, match="lost"):
        sb.exec("true")
    wait_for(lambda: ember.Sandbox.from_id(sb.object_id).poll() is not None, what="it to stay ended")


# ---------------------------------------------------------------- on the container backend


@pytest.fixture(scope="module")
def isolated_app(container_cluster):
    return ember.App.lookup("isolated-sandboxes", create_if_missing=True)


def test_a_sandbox_terminated_as_it_starts_leaves_no_container(isolated_app):
    """Its stop reaches its worker while the container is still being made (an image of its own,
    with no spare ready): the worker stops it once it is started."""
    client = Client.from_env()
    image = ember.Image.debian_slim().env({"EMBER_TEST_IMAGE": str(time.time_ns())})
    sb = ember.Sandbox.create(app=isolated_app, image=image, timeout=60)
    sb.terminate()
    cid = sb._info.container_id

    def gone():
        listed = client.run(client.rpc("ContainerList", api_pb2.ContainerListRequest(app_id=isolated_app.app_id)))
        return cid not in [c.container_id for c in listed.containers]
    wait_for(gone, timeout=30, what=f"its container {cid} to end")


def test_an_isolated_sandbox_sees_only_itself(isolated_app):
    sb = ember.Sandbox.create(app=isolated_app, timeout=60, block_network=True)
    p = sb.exec("sh", "-c", f"hostname; ls /sys/class/net; ls /proc | grep -c '^[0-9]'; cat {ROOT / 'README.md'}")
    hostname, nets, pids = p.stdout.read().splitlines()[:3]
    assert p.wait() != 0 and "No such file" in p.stderr.read()  # the host's files are not there
    assert hostname.startswith("ct-") and nets == "lo" and int(pids) < 10
    missing = sb.exec("no-such-command-here")
    assert missing.wait() == 127 and "no-such-command-here" in missing.stderr.read()
    sb.terminate()


def test_files_in_and_out_stream_and_stay_in_the_sandbox(isolated_app, tmp_path):
    host_secret = tmp_path / "host-secret"
    host_secret.write_text("host only")
    sb = ember.Sandbox.create(app=isolated_app, timeout=60)
    sb.mkdir("/work/out", parents=True)
    with sb.open("/work/out/notes.txt", "w") as f:
        f.write("héllo\n")
        f.write("second\n")
    with sb.open("/work/out/notes.txt", "a") as f:
        f.write("third\n")
    with sb.open("/work/out/notes.txt") as f:
        assert f.readline() == "héllo\n" and f.read() == "second\nthird\n"
    big = os.urandom(1 << 20) * 12  # 12 MiB: many chunks each way
    with sb.open("/work/out/big.bin", "wb") as f:
        for i in range(0, len(big), 3 << 20):
            f.write(big[i:i + (3 << 20)])
    with sb.open("/work/out/big.bin", "rb") as f:
        assert f.read(10) == big[:10] and f.read() == big[10:]
    assert sb.exec("sh", "-c", "cat /work/out/notes.txt").stdout.read() == "héllo\nsecond\nthird\n"
    assert sb.ls("/work/out") == ["big.bin", "notes.txt"]
    # Paths are the sandbox's: a link to a host's file finds nothing there.
    sb.exec("ln", "-s", str(host_secret), "/work/out/link").wait()
    with pytest.raises(exception.SandboxFilesystemNotFoundError):
        sb.open("/work/out/link")
    with pytest.raises(exception.SandboxFilesystemNotFoundError):
        sb.open(str(host_secret))
    with pytest.raises(exception.SandboxFilesystemIsADirectoryError):
        sb.open("/work/out")
    with pytest.raises(exception.SandboxFilesystemNotFoundError):
        sb.open("/work/missing/x.txt", "w")
    with pytest.raises(exception.SandboxFilesystemPathAlreadyExistsError):
        sb.mkdir("/work/out")
    with pytest.raises(exception.SandboxFilesystemDirectoryNotEmptyError):
        sb.rm("/work/out")
    with pytest.raises(exception.InvalidError, match="absolute path"):
        sb.ls("relative")
    sb.rm("/work/out/big.bin")
    assert sb.ls("/work/out") == ["link", "notes.txt"]
    sb.rm("/work/out", recursive=True)
    with pytest.raises(exception.SandboxFilesystemNotFoundError):
        sb.ls("/work/out")
    assert host_secret.read_text() == "host only"
    sb.terminate()
    with pytest.raises(exception.SandboxTerminatedError):
        sb.open("/etc/hostname")


def test_watch_yields_changes_under_a_directory_as_they_come(isolated_app):
    Type = ember.file_io.FileWatchEventType
    sb = ember.Sandbox.create(app=isolated_app, timeout=60)
    try:
        sb.mkdir("/w/sub", parents=True)
        events = []

        def consume():
            for e in sb.watch("/w", recursive=True, timeout=30, filter=[Type.Create, Type.Modify, Type.Remove]):
                events.append((e.type, *e.paths))
                if e.type == Type.Remove and e.paths == ["/w/new/c"]:
                    break  # the watch ends with the loop

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        # Once a change shows, it watches: the events of what follows are all there.
        probes = iter(range(1000))

        def watching():
            return sb.exec("touch", f"/w/ready-{next(probes)}").wait() == 0 and any(
                kind == Type.Create and path.startswith("/w/ready-") for kind, path in events)
        wait_for(watching, what="the watch to start")
        assert sb.exec("sh", "-c", "echo x > /w/sub/b; cat /w/sub/b; mkdir /w/new").wait() == 0
        wait_for(lambda: (Type.Create, "/w/new") in events, what="the new directory's event")
        assert sb.exec("sh", "-c", "echo y > /w/new/c; rm /w/sub/b /w/new/c").wait() == 0
        t.join(30)
        assert not t.is_alive()

        def watchers() -> int:  # processes of the sandbox running the watch's program
            p = sb.exec("sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -o 'inotify_init[1]' | wc -l")
            return int(p.stdout.read())
        wait_for(lambda: watchers() == 0, what="the watch's program to end with the loop")
        for event in [(Type.Create, "/w/sub/b"), (Type.Modify, "/w/sub/b"), (Type.Remove, "/w/sub/b"),
                      (Type.Create, "/w/new/c"), (Type.Remove, "/w/new/c")]:
            assert event in events, (event, events)
        assert all(kind != Type.Access for kind, _path in events)  # filtered out (cat read the file)
        # A watch ends at its timeout; a missing path says so.
        assert list(sb.watch("/w/sub", timeout=0.5)) == []
        with pytest.raises(exception.SandboxFilesystemNotFoundError, match="/nowhere"):
            next(iter(sb.watch("/nowhere")))
        with pytest.raises(exception.InvalidError, match="filter"):
            next(iter(sb.watch("/w", filter=["Create"])))
    finally:
        sb.terminate()


def test_a_sandbox_killed_for_memory_says_its_limit(isolated_app):
    sb = ember.Sandbox.create("python3", "-c", "b = bytearray(400 << 20); print(len(b))", app=isolated_app,
                              memory=100, timeout=60)
    with pytest.raises(exception.SandboxTerminatedError, match="killed for memory.*memory limit of 100 MiB"):
        sb.wait()
    assert sb.returncode == 137
