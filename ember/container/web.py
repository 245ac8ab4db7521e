"""Web endpoints inside a container: each request (a web input) runs the function's ASGI app.

Every kind of endpoint becomes one ASGI app, made once per container: a @fastapi_endpoint
function is wrapped in a FastAPI app, an @asgi_app function returns one, a @wsgi_app function
returns a WSGI app that runs in threads, and a @web_server function starts a server that
requests are proxied to. Requests run as tasks on the runtime's I/O loop, up to the function's
max_inputs at once; their ASGI messages go back to the gateway batched per loop iteration.
"""

import asyncio
import concurrent.futures
import io
import socket
import sys
import time
import traceback

from .. import context
from .._asgi import fill_event, to_message
from ..proto import api_pb2

Output = api_pb2.Output
Kind = api_pb2.WebEndpoint
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"proxy-connection",
              b"content-length"}


def make_apps(obj, d: api_pb2.FunctionDefinition) -> dict:
    """The ASGI apps of a function's web endpoint, or of a class instance's web methods, by
    method name ("" for a function). Runs user code: in the main thread, once per container."""
    if d.web.kind:
        return {"": make_app(obj, d.web, d.name, d.max_inputs)}
    return {m: make_app(getattr(obj, m), web, f"{d.name}.{m}", d.max_inputs) for m, web in d.web_methods.items()}


def make_app(fn, web: api_pb2.WebEndpoint, name: str, max_inputs: int):
    if web.kind == Kind.FASTAPI:
        try:
            from fastapi import FastAPI
        except ImportError:
            raise ImportError(f"{name}: @ember.fastapi_endpoint needs FastAPI in the function's image: "
                              "add .pip_install(\"fastapi[standard]\") to it") from None
        api = FastAPI(docs_url="/docs" if web.docs else None, redoc_url=None,
                      openapi_url="/openapi.json" if web.docs else None)
        api.add_api_route("/", fn, methods=[web.method])
        return api
    if web.kind == Kind.ASGI:
        return _returned(fn, name, "an ASGI app", callable)
    if web.kind == Kind.WSGI:
        return WsgiApp(_returned(fn, name, "a WSGI app", callable), max(1, max_inputs))
    if web.kind == Kind.WEB_SERVER:
        fn()
        _wait_for_port(web.port, web.startup_timeout, name)
        return ProxyApp(web.port)
    raise ValueError(f"{name}: unknown kind of web endpoint {web.kind}")


def _returned(fn, name: str, what: str, check):
    app = fn()
    if not check(app):
        raise TypeError(f"{name}() must return {what}, not {type(app).__name__}")
    return app


def _wait_for_port(port: int, timeout: float, name: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"@ember.web_server({port}): nothing listened on port {port} within "
                                   f"{timeout:g}s after {name}() returned; start the server there (it may bind "
                                   "0.0.0.0 or 127.0.0.1), or raise startup_timeout") from None
            time.sleep(0.02)


class WebHost:
    """Runs web inputs as tasks on the I/O loop of the runtime.

    A request costs as few Python objects as it can: its task gets a context with its input set
    (no block around its body), one timer for its timeout (not an asyncio.timeout), and its ASGI
    messages become events made in place in the message that carries them to the gateway, sent
    at the end of the loop's turn with whatever else is ready then."""

    def __init__(self, runtime, apps: dict, timeout: float):
        self.runtime = runtime
        self.apps = apps  # by the class method that serves them ("" for a function)
        self.timeout = timeout or None
        self.requests: dict[str, asyncio.Task] = {}
        # The events after a request's first part (more body, a disconnect, WebSocket messages),
        # by input id: made only for the requests that get some (a plain GET gets none).
        self.inboxes: dict[str, asyncio.Queue] = {}
        self.expired: set[str] = set()  # requests cancelled by their timeout's timer
        self.pending: api_pb2.ContainerMessage | None = None  # the next message of outputs and events

    # All of these run on the I/O loop.

    def start(self, inp: api_pb2.Input):
        loop = asyncio.get_running_loop()
        self.requests[inp.input_id] = loop.create_task(
            self._run(inp), context=context.input_context(inp.input_id, inp.call_id))

    def deliver(self, events):
        for ev in events:
            if ev.input_id in self.requests:
                self._inbox(ev.input_id).put_nowait(ev)

    def _inbox(self, input_id: str) -> asyncio.Queue:
        q = self.inboxes.get(input_id)
        if q is None:
            q = self.inboxes[input_id] = asyncio.Queue()
        return q

    def cancel(self, input_id: str):
        task = self.requests.get(input_id)
        if task is not None:
            task.cancel()

    def _expire(self, input_id: str):
        if input_id in self.requests:
            self.expired.add(input_id)
            self.requests[input_id].cancel()

    def _batch(self) -> api_pb2.OutputBatch:
        """The batch going to the gateway at the end of this turn of the loop."""
        if self.pending is None:
            self.pending = api_pb2.ContainerMessage()
            asyncio.get_running_loop().call_soon(self._flush)
        return self.pending.outputs

    def _flush(self):
        msg, self.pending = self.pending, None
        # What user code printed goes first: it happened before the answer.
        sys.stdout.flush()
        sys.stderr.flush()
        self.runtime._send_outputs(msg)

    async def _run(self, inp: api_pb2.Input):
        req = inp.http
        input_id = inp.input_id
        scope = _scope(req)
        is_http = req.type == "http"
        opened = False
        started = False

        async def receive():
            nonlocal opened
            if not opened:
                opened = True
                if is_http:
                    return {"type": "http.request", "body": req.body, "more_body": req.more_body}
                return {"type": "websocket.connect"}
            return to_message(await self._inbox(input_id).get())

        async def send(msg):
            nonlocal started
            events = self._batch().http
            ev = events.add(input_id=input_id)
            try:
                fill_event(ev, msg)
            except BaseException:
                del events[-1]  # not an event to send
                raise
            started = started or ev.type in STARTS

        timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, input_id) if self.timeout else None
        try:
            await self.apps[req.endpoint](scope, receive, send)
            status, error = Output.SUCCESS, ""
        except asyncio.CancelledError:
            if input_id in self.expired:
                status, error = Output.TIMEOUT, f"the request ran past its function's timeout ({self.timeout:g}s)"
            else:
                status, error = Output.CANCELLED, "the client went away"
        except BaseException as e:
            # The handler crashed: this request gets a 500, the container serves on.
            print(f"ember: {req.method} {req.root_path}{req.path} failed:", file=sys.stderr)
            traceback.print_exc()
            if is_http and not started:
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"Internal Server Error"})
            status, error = Output.FAILURE, f"{type(e).__name__}: {e}"
        if timer is not None:
            timer.cancel()
        del self.requests[input_id]
        self.inboxes.pop(input_id, None)
        self.expired.discard(input_id)
        self._batch().outputs.add(input_id=input_id, status=status, error=error)


# The events that answer a request: after one, an error can no longer be a 500 of its own.
STARTS = frozenset(("http.response.start", "websocket.accept", "websocket.close"))


def _scope(req: api_pb2.HttpRequest) -> dict:
    root = req.root_path
    path = root + req.path
    scope = {
        "type": req.type, "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": req.http_version,
        "scheme": req.scheme, "path": path,
        "raw_path": path.encode(), "query_string": req.query_string, "root_path": root,
        "headers": [(h.name, h.value) for h in req.headers], "client": (req.client_host, req.client_port),
        "server": None, "state": {},
    }
    if req.type == "http":
        scope["method"] = req.method
    else:
        scope["subprotocols"] = list(req.subprotocols)
    return scope


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            raise ConnectionError("the client went away")
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


class WsgiApp:
    """A WSGI app behind ASGI: each request runs in a thread, its body streams back."""

    def __init__(self, app, threads: int):
        self.app = app
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="ember-wsgi")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003, "reason": "a WSGI app serves no WebSockets"})
            return
        body = await _read_body(receive)
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        put = lambda item: loop.call_soon_threadsafe(q.put_nowait, item)  # noqa: E731
        future = loop.run_in_executor(self.pool, self._run, scope, body, put)
        while (msg := await q.get()) is not None:
            await send(msg)
        await future  # raises what the app raised

    def _run(self, scope, body: bytes, put):
        response = {}

        def start_response(status, headers, exc_info=None):
            response["status"] = int(status.split(" ", 1)[0])
            response["headers"] = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            return lambda data: None  # the legacy write() callable: unused by modern apps

        try:
            result = self.app(_environ(scope, body), start_response)
            try:
                for chunk in result:
                    if chunk:
                        if "sent" not in response:
                            put({"type": "http.response.start", "status": response["status"],
                                 "headers": response["headers"]})
                            response["sent"] = True
                        put({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                if hasattr(result, "close"):
                    result.close()
            if "sent" not in response:
                put({"type": "http.response.start", "status": response["status"], "headers": response["headers"]})
            put({"type": "http.response.body", "body": b""})
        finally:
            put(None)


def _environ(scope, body: bytes) -> dict:
    env = {
        "REQUEST_METHOD": scope["method"], "SCRIPT_NAME": scope["root_path"],
        "PATH_INFO": scope["path"][len(scope["root_path"]):], "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": scope["client"][0], "wsgi.version": (1, 0), "wsgi.url_scheme": scope["scheme"],
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": True, "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value.decode("latin-1")
        elif key != "CONTENT_LENGTH":
            key = "HTTP_" + key
            env[key] = f"{env[key]},{value.decode('latin-1')}" if key in env else value.decode("latin-1")
    return env


class ProxyApp:
    """Requests to a server the function started on a port in the container (HTTP/1.0:
    one connection per request, a body that ends when the connection does)."""

    def __init__(self, port: int):
        self.port = port

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003,
                        "reason": "WebSockets to a web_server are not relayed"})
            return
        body = await _read_body(receive)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            target = scope["path"][len(scope["root_path"]):] or "/"
            if scope["query_string"]:
                target += "?" + scope["query_string"].decode("latin-1")
            head = [f"{scope['method']} {target} HTTP/1.0".encode()]
            head += [k + b": " + v for k, v in scope["headers"] if k not in HOP_BY_HOP]
            head.append(b"content-length: " + str(len(body)).encode())
            writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            status_line = await reader.readline()
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[1].isdigit():
                raise ConnectionError(f"the server on port {self.port} answered {status_line[:80]!r}, not HTTP")
            headers = []
            length = None
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip()
                if name == b"content-length":
                    length = int(value)
                if name not in HOP_BY_HOP or name == b"content-length":
                    headers.append((name, value))
            await send({"type": "http.response.start", "status": int(parts[1]), "headers": headers})
            left = length
            while left is None or left > 0:
                chunk = await reader.read(65536 if left is None else min(65536, left))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            writer.close()
