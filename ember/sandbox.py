"""ember.Sandbox: a container you create, command and tear down from your own program (Modal's
Sandbox: code from agents, user submissions, notebooks).

    app = ember.App.lookup("agents", create_if_missing=True)
    sb = ember.Sandbox.create("python3", "-c", "print(input())", app=app, timeout=600)
    sb.stdin.write(b"hello\\n"); sb.stdin.write_eof(); sb.stdin.drain()
    print(sb.stdout.read())           # hello
    p = sb.exec("ls", "/")             # a ContainerProcess
    for line in p.stdout: ...
    sb.terminate()

The sandbox is an object of the control plane (server/sandboxes.py): another process finds it
by id (Sandbox.from_id) or by name (Sandbox.from_name(app_name, name)); its main command's
output is kept there, so a reader that comes later reads it from the start. An exec is a
ContainerExec stream (as `ember container exec`), whose output this process reads as it comes.
Every operation has its async twin under `.aio`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib

import grpc

from . import _cidr, config, context, exception, file_io
from ._client.bridge import twin
from ._client.client import Client, translate
from ._client.container_exec import ContainerExec
from .function import FunctionSpec
from .image import Image
from .probe import Probe
from .proto import api_pb2
from .refused import refusal
from .secret import Secret
from .tunnel import Tunnel

Info = api_pb2.SandboxInfo
WAIT_STEP = 50.0  # seconds of one SandboxWait (it is asked again until the sandbox ends)
STDIN_CHUNK = 512 << 10  # bytes of stdin per message
EXEC_TIMED_OUT = 124  # an exec's returncode once its timeout= passed (timeout(1)'s)
REFUSED_OPTIONS = ("h2_ports", "region", "cloud",
                   "pty_info", "mount", "network_file_systems", "proxy", "verbose", "readiness_probe")


def _client() -> Client:
    return Client.from_env()


class _Pipe:
    """What a command wrote on one of its streams so far, on the client's loop; readers read it
    from their own position."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.eof = False
        self.error: BaseException | None = None
        self.changed = asyncio.Event()

    def feed(self, data: bytes):
        self.chunks.append(data)
        self._wake()

    def close(self, error: BaseException | None = None):
        self.eof = True
        self.error = self.error or error
        self._wake()

    def _wake(self):
        self.changed.set()
        self.changed = asyncio.Event()


class StreamReader:
    """A command's stdout or stderr: `read()` all of it (until the command ends), or iterate
    over its lines as they come (`for line in p.stdout`, `async for line in p.stdout`). Text
    (str) unless its command was started with text=False (bytes)."""

    def __init__(self, pipe_factory, text: bool = True):
        self._pipe_factory = pipe_factory  # a coroutine making its _Pipe (on the loop), once
        self._pipe: _Pipe | None = None
        self._text = text
        self._pos = 0  # chunks read

    def _loop(self):
        return _client().bridge

    async def _get_pipe(self) -> _Pipe:
        if self._pipe is None:
            self._pipe = await self._pipe_factory()
        return self._pipe

    async def _chunks(self):
        pipe = await self._get_pipe()
        while True:
            changed = pipe.changed
            while self._pos < len(pipe.chunks):
                self._pos += 1
                yield pipe.chunks[self._pos - 1]
            if pipe.eof:
                if pipe.error is not None:
                    raise pipe.error
                return
            await changed.wait()

    def _decode(self, data: bytes):
        return data.decode(errors="replace") if self._text else data

    @twin
    async def read(self):
        """All it writes, once the command ended (or what is left of it, after reading some)."""
        return self._decode(b"".join([c async for c in self._chunks()]))

    @twin
    async def _lines(self):
        rest = b""
        async for chunk in self._chunks():
            rest += chunk
            *lines, rest = rest.split(b"\n")
            for line in lines:
                yield self._decode(line + b"\n")
        if rest:
            yield self._decode(rest)

    def __iter__(self):
        return iter(self._lines())

    def __aiter__(self):
        return self._lines.aio()


class StreamWriter:
    """A command's stdin: write() buffers, drain() sends what was written (and the end, after
    write_eof())."""

    def __init__(self, send):
        self._send = send  # coroutine (data, eof): delivers them
        self._buffer: list[bytes] = []
        self._eof = False
        self._closed = False

    def _loop(self):
        return _client().bridge

    def write(self, data: bytes | bytearray | memoryview | str):
        if self._closed or self._eof:
            raise exception.InvalidError("stdin.write() after write_eof(): its stdin is closed")
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"stdin.write({data!r:.40}): pass bytes or str")
        self._buffer.append(bytes(data))

    def write_eof(self):
        """Its stdin ends after what was written (sent by the next drain())."""
        self._eof = True

    @twin
    async def drain(self):
        """Send what was written (and the end, after write_eof())."""
        data, self._buffer = b"".join(self._buffer), []
        eof = self._eof and not self._closed
        # In messages the control plane takes (at most MAX_EXEC_INPUT bytes each), the end with the last.
        for i in range(0, len(data), STDIN_CHUNK):
            await self._send(data[i:i + STDIN_CHUNK], eof and i + STDIN_CHUNK >= len(data))
        if eof and not data:
            await self._send(b"", True)
        self._closed = self._closed or eof


class ContainerProcess:
    """A command run in a sandbox by sb.exec(): stdout, stderr (StreamReader), stdin
    (StreamWriter), wait(), poll(), returncode."""

    def __init__(self, sandbox: Sandbox, argv: list[str], text: bool):
        self._sandbox = sandbox
        self._argv = argv
        self._pipes = {1: _Pipe(), 2: _Pipe()}
        self._exec: ContainerExec | None = None
        self._task: asyncio.Task | None = None
        self._done: asyncio.Event | None = None
        self.returncode: int | None = None
        self.stdout = StreamReader(self._pipe(1), text)
        self.stderr = StreamReader(self._pipe(2), text)
        self.stdin = StreamWriter(self._write)

    def __repr__(self):
        return f"<ember.ContainerProcess {' '.join(self._argv)[:60]!r} in {self._sandbox.object_id}>"

    def _loop(self):
        return _client().bridge

    def _pipe(self, fd: int):
        async def get():
            return self._pipes[fd]
        return get

    async def _write(self, data: bytes, eof: bool):
        if data:
            self._exec.write(data)
        if eof:
            self._exec.write_eof()

    async def _start(self, ce: ContainerExec, timeout: float | None):
        """Start it and pump its output into its pipes; returns once the control plane took it
        (or raises why it could not run)."""
        self._exec = ce
        self._done = asyncio.Event()
        accepted = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._pump(ce, accepted, timeout))
        await accepted

    async def _pump(self, ce: ContainerExec, accepted: asyncio.Future, timeout: float | None):
        error = None
        try:
            async with asyncio.timeout(timeout):
                async for out in ce.outputs():
                    if not accepted.done():
                        accepted.set_result(None)
                    if out.data:
                        self._pipes[2 if out.fd == 2 else 1].feed(out.data)
                    if out.exited:
                        if out.error:
                            # It could not run, or its sandbox ended while it ran: said on its stderr.
                            self._pipes[2].feed(f"ember: {out.error}\n".encode())
                            self.returncode = 137
                        else:
                            code = out.exit_code
                            self.returncode = 128 - code if code < 0 else code
        except TimeoutError:
            self._pipes[2].feed(f"ember: the command passed its timeout of {timeout:g}s and was killed\n".encode())
            self.returncode = EXEC_TIMED_OUT
        except exception.Error as e:  # its container is gone, or the sandbox ended: which says why
            info = await self._sandbox._refresh()
            error = _ended(info) if info.state == Info.ENDED else e
        except BaseException as e:  # noqa: BLE001 - the reader and the waiter get it
            error = e
        finally:
            if self.returncode is None and error is None:
                error = exception.ExecutionError(f"the command {self._argv[0]!r} ended without an exit code")
            if not accepted.done():
                if error is not None:
                    accepted.set_exception(error)
                else:
                    accepted.set_result(None)
            for pipe in self._pipes.values():
                pipe.close(None if self.returncode is not None else error)
            self._done.set()

    @twin
    async def wait(self) -> int:
        """Wait for its end: its return code (a signal N's is 128 + N)."""
        await self._done.wait()
        if self.returncode is None:
            raise self._pipes[1].error
        return self.returncode

    def poll(self) -> int | None:
        """Its return code if it ended, else None."""
        return self.returncode


class _Statics:
    """Sandbox.create, from_id, from_name, list: what makes or finds Sandbox objects."""

    def _loop(self):
        return _client().bridge

    @twin
    async def create(self, *cmd: str, app=None, image=None, secrets=(), volumes=None, cpu=None, memory=None,
                     gpu=None, timeout: float = 300, idle_timeout: float | None = None, workdir: str | None = None,
                     env: dict | None = None, name: str | None = None, block_network: bool = False,
                     cidr_allowlist: list[str] | None = None, environment_name: str | None = None,
                     encrypted_ports=(), unencrypted_ports=(), public_ports: bool = False,
                     readiness_probe: Probe | None = None, **refused) -> Sandbox:
        """A new sandbox of `app` running cmd (none: it stays up until terminated or timed out)."""
        what = "Sandbox.create()"
        config.check_environment(environment_name, what)
        for option in refused:
            if option in REFUSED_OPTIONS:
                raise exception.InvalidError(f"{what}: {option}= is not supported by Ember's sandboxes yet")
            raise TypeError(f"{what} got an unexpected keyword argument {option!r}")
        argv = _argv(cmd, what)
        # In a function's container, its own app (the App object there does not run).
        app_id = getattr(app, "app_id", None) or context.app_id
        if app_id is None:
            raise exception.InvalidError(
                f"{what}: pass app= a running app: ember.App.lookup(NAME, create_if_missing=True), or the app of "
                "`with app.run():` (its sandboxes end with it)")
        spec = FunctionSpec(image=image, cpu=cpu, memory=memory, gpu=gpu, timeout=timeout, env=env,
                            secrets=list(secrets), volumes=volumes, block_network=block_network)
        if idle_timeout is not None and (not isinstance(idle_timeout, (int, float)) or isinstance(idle_timeout, bool)
                                         or not 0 < idle_timeout <= 86400):
            raise exception.InvalidError(f"{what}: idle_timeout={idle_timeout!r}: pass seconds, more than 0 and "
                                         "at most 86400")
        if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
            raise exception.InvalidError(f"{what}: workdir={workdir!r}: pass an absolute path, e.g. \"/tmp\"")
        if name is not None and (not isinstance(name, str) or not name):
            raise exception.InvalidError(f"{what}: name={name!r}: pass a non-empty string")
        ports = {"encrypted_ports": _ports(encrypted_ports, "encrypted_ports", what),
                 "unencrypted_ports": _ports(unencrypted_ports, "unencrypted_ports", what)}
        if set(ports["encrypted_ports"]) & set(ports["unencrypted_ports"]):
            raise exception.InvalidError(f"{what}: a port is in both encrypted_ports and unencrypted_ports: "
                                         "name each port once")
        if readiness_probe is not None and not isinstance(readiness_probe, Probe):
            raise exception.InvalidError(f"{what}: readiness_probe={readiness_probe!r}: pass an ember.Probe "
                                         "(Probe.with_tcp(PORT) or Probe.with_exec(*CMD))")
        if not isinstance(public_ports, bool):
            raise exception.InvalidError(f"{what}: public_ports={public_ports!r}: pass True or False")
        if cidr_allowlist is not None:
            try:
                cidr_allowlist = _cidr.check_allowlist(cidr_allowlist, block_network)
            except ValueError as e:
                raise exception.InvalidError(f"{what}: cidr_allowlist=: {e}") from None
        client = _client()
        d = spec.definition("sandbox", False)
        d.cidr_allowlist.extend(cidr_allowlist or ())
        d.image.CopyFrom(await _build(client, spec.image))
        d.secret_ids.extend([await s._resolve(client) for s in spec.secrets])
        d.volume_mounts.update({path: await v._id() for path, v in spec.volumes.items()})
        info = await client.rpc("SandboxCreate", api_pb2.SandboxCreateRequest(
            app_id=app_id, definition=d, argv=argv, workdir=workdir or "", timeout=spec.timeout,
            idle_timeout=idle_timeout or 0, name=name or "", public_ports=public_ports, **ports), what=what)
        sb = Sandbox(info)
        sb._probe = readiness_probe
        return sb

    @twin
    async def from_id(self, sandbox_id: str) -> Sandbox:
        """The sandbox of that id (of this workspace), running or ended a while ago."""
        if not isinstance(sandbox_id, str) or not sandbox_id:
            raise exception.InvalidError(f"Sandbox.from_id({sandbox_id!r}): pass a sandbox id, e.g. sb-...")
        return Sandbox(await _get(sandbox_id))

    @twin
    async def from_name(self, app_name: str, name: str, *, environment_name: str | None = None) -> Sandbox:
        """The running sandbox named `name` of the deployed app `app_name`."""
        what = f"Sandbox.from_name({app_name!r}, {name!r})"
        config.check_environment(environment_name, what)
        if not (isinstance(app_name, str) and app_name and isinstance(name, str) and name):
            raise exception.InvalidError(f"{what}: pass the names of a deployed app and of its sandbox")
        return Sandbox(await _client().rpc("SandboxGet", api_pb2.SandboxGetRequest(app_name=app_name, name=name),
                                           what=what))

    @twin
    async def list(self, *, app_id: str | None = None, tags: dict[str, str] | None = None):
        """The workspace's sandboxes (of one app; with all these tags), oldest first."""
        if tags is not None and not (isinstance(tags, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in tags.items())):
            raise exception.InvalidError(f"Sandbox.list(tags={tags!r}): pass a dict of strings")
        resp = await _client().rpc("SandboxList", api_pb2.SandboxListRequest(app_id=app_id or "", tags=tags or {}),
                                   what="Sandbox.list()")
        for info in resp.sandboxes:
            yield Sandbox(info)


_statics = _Statics()


class Sandbox:
    """A sandbox: made by Sandbox.create(), found by Sandbox.from_id() and Sandbox.from_name()."""

    returncode: int | None = None  # once it ended: its command's exit code (124: timed out; 137: killed)
    create = _statics.create
    from_id = _statics.from_id
    from_name = _statics.from_name
    list = _statics.list

    def __init__(self, info: api_pb2.SandboxInfo):
        self._info = info
        self.returncode: int | None = info.returncode if info.state == Info.ENDED else None
        self._stdout = StreamReader(self._output(1))
        self._stderr = StreamReader(self._output(2))
        self._stdin_writer = StreamWriter(self._stdin)
        self._readers: builtins.list[asyncio.Task] = []
        self._probe: Probe | None = None  # its readiness probe: kept here, by the object create() made

    @property
    def stdout(self) -> StreamReader:
        """Its command's stdout, from its start (kept by the control plane: its latest 16 MiB)."""
        return self._stdout

    @property
    def stderr(self) -> StreamReader:
        return self._stderr

    @property
    def stdin(self) -> StreamWriter:
        return self._stdin_writer

    def __repr__(self):
        return f"<ember.Sandbox {self.object_id}>"

    def _loop(self):
        return _client().bridge

    @property
    def object_id(self) -> str:
        return self._info.sandbox_id

    def _what(self, op: str) -> str:
        return f"sandbox {self.object_id}: {op}"

    def _output(self, fd: int):
        """Its main command's stdout or stderr, read from the control plane (from its start)."""
        async def pipe():
            p = _Pipe()

            async def pump():
                try:
                    async for chunk in _client().stub.SandboxOutput(api_pb2.SandboxOutputRequest(
                            sandbox_id=self.object_id, fd=fd)):
                        if chunk.data:
                            p.feed(chunk.data)
                        if chunk.eof:
                            break
                    p.close()
                except BaseException as e:  # noqa: BLE001 - its reader raises it
                    p.close(_translate(e, self._what("reading its output")))
            self._readers.append(asyncio.create_task(pump()))
            return p
        return pipe

    async def _stdin(self, data: bytes, eof: bool):
        await _client().rpc("SandboxStdin", api_pb2.SandboxStdinRequest(sandbox_id=self.object_id, data=data, eof=eof),
                            what=self._what("stdin"))

    async def _refresh(self) -> api_pb2.SandboxInfo:
        self._info = await _get(self.object_id)
        if self._info.state == Info.ENDED:
            self.returncode = self._info.returncode
        return self._info

    @twin
    async def wait(self, raise_on_termination: bool = True) -> None:
        """Wait for its end. With raise_on_termination, a sandbox that did not end by its
        command's exit raises SandboxTimeoutError (its timeout or idle timeout passed) or
        SandboxTerminatedError (terminated, killed for memory, its worker lost: the message says)."""
        client = _client()
        while True:
            info = await client.rpc("SandboxWait", api_pb2.SandboxWaitRequest(
                sandbox_id=self.object_id, timeout=WAIT_STEP), what=self._what("wait()"))
            if info.state == Info.ENDED:
                break
        self._info = info
        self.returncode = info.returncode
        if raise_on_termination and info.error:
            raise _ended(info)

    @twin
    async def poll(self) -> int | None:
        """Its return code if it ended, else None."""
        await self._refresh()
        return self.returncode

    @twin
    async def terminate(self) -> None:
        """End it now: its container is killed (wait() then returns, returncode 137)."""
        await _client().rpc("SandboxTerminate", api_pb2.SandboxRef(sandbox_id=self.object_id),
                            what=self._what("terminate()"))

    @twin
    async def tunnels(self, timeout: float = 50) -> dict[int, Tunnel]:
        """Its ports' tunnels by port (encrypted_ports and unencrypted_ports), once it runs (waiting
        up to `timeout` seconds for it to start): each one's `url` is where the gateway serves it."""
        info = await self._refresh()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while info.state == Info.STARTING:
            left = deadline - loop.time()
            if left <= 0:
                raise exception.SandboxTimeoutError(f"{self._what('tunnels()')}: it did not start within "
                                                    f"{timeout:g}s (no worker had room, or its image builds)")
            info = self._info = await _client().rpc("SandboxWait", api_pb2.SandboxWaitRequest(
                sandbox_id=self.object_id, timeout=min(left, WAIT_STEP), until_running=True),
                what=self._what("tunnels()"))
        if info.state == Info.ENDED:
            self.returncode = info.returncode
            raise _ended(info)
        return {t.container_port: Tunnel(host=t.host, port=t.port, url=t.url, public=t.public,
                                         unencrypted_host=t.host if t.unencrypted else "",
                                         unencrypted_port=t.port if t.unencrypted else 0)
                for t in info.tunnels}

    @twin
    async def wait_until_ready(self, *, timeout: float = 300) -> None:
        """Return once its readiness probe (Sandbox.create(readiness_probe=)) succeeds: tried in
        the sandbox every probe.interval_ms, for up to `timeout` seconds."""
        what = self._what("wait_until_ready()")
        if self._probe is None:
            raise exception.InvalidError(f"{what}: it has no readiness probe: pass readiness_probe=ember.Probe."
                                         "with_tcp(PORT) (or .with_exec(*CMD)) to Sandbox.create(), and call this on "
                                         "the Sandbox it returns (the probe stays with that object)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            proc = await self.exec.aio(*self._probe.argv(), timeout=max(1.0, deadline - loop.time()))
            if await proc.wait.aio() == 0:
                return
            if loop.time() + self._probe.interval_ms / 1000 > deadline:
                raise exception.TimeoutError(f"{what}: its readiness probe ({self._probe}) did not succeed "
                                             f"within {timeout:g}s")
            await asyncio.sleep(self._probe.interval_ms / 1000)

    def detach(self) -> None:
        """Let go of it here (its output readers stop); it runs on until it ends, and
        Sandbox.from_id(sb.object_id) finds it again."""
        for t in self._readers:
            with contextlib.suppress(Exception):
                t.get_loop().call_soon_threadsafe(t.cancel)
        self._readers.clear()

    # Modal's sandbox methods that Ember's sandboxes cannot do (ember/refused.py says why).
    def reload_volumes(self, *args, **kwargs):
        raise refusal("Sandbox.reload_volumes")

    def mount_image(self, *args, **kwargs):
        raise refusal("Sandbox.mount_image")

    def unmount_image(self, *args, **kwargs):
        raise refusal("Sandbox.unmount_image")

    def snapshot_directory(self, *args, **kwargs):
        raise refusal("Sandbox.snapshot_directory")

    def create_connect_token(self, *args, **kwargs):
        raise refusal("Sandbox.create_connect_token")

    @property
    def filesystem(self):
        raise refusal("Sandbox.filesystem")

    @property
    def logs(self):
        raise refusal("Sandbox.logs")

    @twin
    async def set_tags(self, tags: dict[str, str]) -> None:
        """Replace its tags (what Sandbox.list(tags=) finds it by)."""
        if not (isinstance(tags, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())):
            raise exception.InvalidError(f"{self._what('set_tags')}({tags!r}): pass a dict of strings")
        await _client().rpc("SandboxSetTags", api_pb2.SandboxSetTagsRequest(sandbox_id=self.object_id, tags=tags),
                            what=self._what("set_tags()"))

    @twin
    async def get_tags(self) -> dict[str, str]:
        return dict((await self._refresh()).tags)

    @twin
    async def exec(self, *cmd: str, workdir: str | None = None, env: dict | None = None, secrets=(),
                   timeout: float | None = None, pty: bool = False, text: bool = True,
                   **refused) -> ContainerProcess:
        """Run a command in the sandbox; many may run at once. Returns its ContainerProcess."""
        what = self._what("exec()")
        for option in refused:
            if option in REFUSED_OPTIONS:
                raise exception.InvalidError(f"{what}: {option}= is not supported by Ember's sandboxes yet")
            raise TypeError(f"exec() got an unexpected keyword argument {option!r}")
        argv = _argv(cmd, what)
        if not argv:
            raise exception.InvalidError(f"{what}: pass the command to run, e.g. sb.exec(\"ls\", \"-l\")")
        if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
            raise exception.InvalidError(f"{what}: workdir={workdir!r}: pass an absolute path")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                    or not timeout > 0):
            raise exception.InvalidError(f"{what}: timeout={timeout!r}: pass seconds, more than 0")
        if not isinstance(secrets, (builtins.list, tuple)) or not all(isinstance(s, Secret) for s in secrets):
            raise exception.InvalidError(f"{what}: secrets={secrets!r}: pass a list of ember.Secret")
        env = _env(env, what)
        info = self._info
        if info.state != Info.RUNNING:
            info = await self._refresh()
            while info.state == Info.STARTING:  # a sandbox just created: exec once it is up
                info = self._info = await _client().rpc("SandboxWait", api_pb2.SandboxWaitRequest(
                    sandbox_id=self.object_id, timeout=WAIT_STEP, until_running=True), what=what)
            if info.state == Info.ENDED:
                self.returncode = info.returncode
                raise _ended(info)
        client = _client()
        ce = ContainerExec(client, info.container_id, argv, tty=pty, workdir=workdir or "", env=env,
                           secret_ids=[await s._resolve(client) for s in secrets])
        proc = ContainerProcess(self, argv, text)
        await proc._start(ce, timeout)
        return proc

    @twin
    async def snapshot_filesystem(self, timeout: float = 55) -> Image:
        """Its filesystem now, as an Image for later sandboxes and functions: its image plus a layer
        of what changed in it (not its volumes). Needs the container backend."""
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
            raise exception.InvalidError(f"{self._what('snapshot_filesystem()')}: timeout={timeout!r}: pass seconds, "
                                         "more than 0 and at most 3600")
        try:
            image = await _client().stub.SandboxSnapshotFilesystem(
                api_pb2.SandboxSnapshotRequest(sandbox_id=self.object_id, timeout=timeout), timeout=timeout + 10)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION and f"{self.object_id} has ended" in (e.details() or ""):
                # It ended before, or while, it was taken (its worker lost, say): the message says why.
                raise exception.SandboxTerminatedError(e.details()) from None
            raise translate(e, self._what("snapshot_filesystem()")) from None
        return Image._of_snapshot(image)

    # ---- files (file_io.py: each an exec of a small script in the sandbox)

    @twin
    async def open(self, path: str, mode: str = "r") -> file_io.FileIO:
        """A file of the sandbox: mode "r", "rb", "w", "wb", "a" or "ab" (text is UTF-8)."""
        file_io.check_path(path, self._what("open()"))
        if mode not in file_io.MODES:
            raise exception.InvalidError(f"{self._what('open()')}: mode={mode!r}: pass one of "
                                         f"{', '.join(file_io.MODES)}")
        f = file_io.FileIO(self, path, mode)
        await f._open()
        return f

    @twin
    async def ls(self, path: str) -> builtins.list[str]:
        """The names in a directory of the sandbox."""
        out = await file_io.run_script(self, file_io.LS, file_io.check_path(path, self._what("ls()")))
        return sorted(name.decode(errors="surrogateescape") for name in out.split(b"\0") if name)

    @twin
    async def mkdir(self, path: str, parents: bool = False) -> None:
        """Make a directory (with parents=True, its missing parents too, and no error if it exists)."""
        await file_io.run_script(self, file_io.MKDIR, file_io.check_path(path, self._what("mkdir()")),
                                 "1" if parents else "0")

    @twin
    async def rm(self, path: str, recursive: bool = False) -> None:
        """Remove a file, or a directory (one that is not empty only with recursive=True)."""
        await file_io.run_script(self, file_io.RM, file_io.check_path(path, self._what("rm()")),
                                 "1" if recursive else "0")

    @twin
    async def watch(self, path: str, filter: builtins.list[file_io.FileWatchEventType] | None = None,
                    recursive: bool | None = None, timeout: float | None = None):
        """Yield a FileWatchEvent for each change of a path of the sandbox (with recursive=True, of
        anything under it) from the first iteration on, until timeout seconds passed (None: until the
        loop stops); filter=: only events of these types."""
        async for event in file_io.watch(self, path, filter, bool(recursive), timeout):
            yield event

    def __del__(self):
        self.detach()


def _argv(cmd, what: str) -> builtins.list[str]:
    if not all(isinstance(a, str) for a in cmd):
        raise exception.InvalidError(f"{what}: pass the command as strings, e.g. (\"python3\", \"-c\", \"print(1)\")")
    if cmd and not cmd[0]:
        raise exception.InvalidError(f"{what}: the command is empty")
    return builtins.list(cmd)


def _ports(ports, option: str, what: str) -> builtins.list[int]:
    if isinstance(ports, (str, bytes)) or not isinstance(ports, (builtins.list, tuple, set, frozenset)) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
        raise exception.InvalidError(f"{what}: {option}={ports!r}: pass a list of TCP ports (1 to 65535), "
                                     "e.g. [8000]")
    return sorted(set(ports))


def _env(env, what: str) -> dict[str, str]:
    env = env or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise exception.InvalidError(f"{what}: env={env!r}: pass a dict of strings")
    return env


async def _get(sandbox_id: str) -> api_pb2.SandboxInfo:
    return await _client().rpc("SandboxGet", api_pb2.SandboxGetRequest(sandbox_id=sandbox_id),
                               what=f"sandbox {sandbox_id}")


async def _build(client: Client, image) -> api_pb2.Image:
    from .app import build_image  # app.py imports function.py, as this does: at use, not at import
    secret_ids = {id(s): await s._resolve(client) for s in image._build_secrets()}
    resolved = await asyncio.to_thread(image._resolve, client.upload_sync, secret_ids)
    await build_image(client, resolved, image._sources())
    return resolved


def _ended(info: api_pb2.SandboxInfo) -> exception.Error:
    """What a sandbox that ended raises, at wait() (ended otherwise than by its command's exit)
    or at exec() (ended at all)."""
    message = (f"{info.error or f'sandbox {info.sandbox_id} has ended: its command exited'} "
               f"(returncode {info.returncode})")
    if info.returncode == 124:
        return exception.SandboxTimeoutError(message)
    return exception.SandboxTerminatedError(message)


def _translate(e: BaseException, what: str) -> BaseException:
    return translate(e, what) if isinstance(e, grpc.aio.AioRpcError) else e
