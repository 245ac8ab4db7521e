"""The HTTP gateway: web endpoints served at stable URLs, each request run by a container.

It is an ASGI application, served by uvicorn on the control plane's event loop. A request for
`/LABEL/rest` (or for `/rest` on a host named `LABEL.anything`) is routed to the function that
serves LABEL now (the current version of a deployed app, the latest run of an ephemeral one).
The request becomes a web input of that function: its ASGI scope goes to a container with the
first part of the body; what follows (more body, WebSocket messages, a disconnect) goes on as
events, and the container's ASGI messages come back the same way, until it sends the input's
final output. The gateway never runs user code and never stores a request.
"""

import asyncio
import contextlib
import logging
import socket

import uvicorn

from .._asgi import to_event, to_message
from ..proto import api_pb2
from .dashboard import Dashboard
from .dispatch import Dispatch
from .ledger import InputState, web_input
from .metrics import CONTENT_TYPE, Metrics, check_access
from .tokens import ProxyTokens
from .tunnels import serves as serves_tunnel
from .web_routes import WebRoutes

log = logging.getLogger("ember.gateway")

Output = api_pb2.Output


class WebRequest:
    """The gateway's side of one request: ASGI messages from the container, in order.

    Events wait in a list and one future wakes the request's task when it waits: an
    asyncio.Queue (a deque, two waiter lists and a loop lookup made for every request) cost more
    than the rest of this class, and a small response's events arrive together anyway."""

    __slots__ = ("events", "final", "input", "outbox", "started", "waiter")

    def __init__(self, message: api_pb2.Input):
        self.input = message  # the Input a container gets: the request (http), made in place in it
        self.events: list[api_pb2.HttpEvent] = []
        self.outbox: list[api_pb2.HttpEvent] = []   # for the container, until it has one
        self.final: api_pb2.Output | None = None
        self.started = False                # a response (or a WebSocket accept) went out
        self.waiter: asyncio.Future | None = None

    @property
    def request(self) -> api_pb2.HttpRequest:
        return self.input.http

    def encoded(self, input_id: str) -> bytes:
        """The request as its container's Input, serialized (for dispatch's InputBatch)."""
        self.input.input_id = input_id
        return self.input.SerializeToString()

    def deliver(self, ev: api_pb2.HttpEvent):
        self.events.append(ev)
        self._wake()

    def finish(self, out: api_pb2.Output):
        self.final = out
        self._wake()

    def _wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next_events(self) -> list[api_pb2.HttpEvent]:
        """The events that came since the last call, waiting for one; [] once the request ended
        (its final output is in `final`) and every event was taken."""
        while not self.events and self.final is None:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        events, self.events = self.events, []
        return events


# The control plane's own paths, answered before a web endpoint's label (unless the request's
# host name routes to a function); so are sandboxes' tunnels, /tunnels/... (tunnels.py), and the
# dashboard's, / and /dashboard/..., which send browsers to the dashboard's own port.
OWN_PATHS = ("/metrics", "/healthz", "/readyz")


class Gateway:
    def __init__(self, routes: WebRoutes, dispatch: Dispatch, tokens: ProxyTokens, *,
                 metrics: Metrics | None = None, readiness=None, tunnels=None):
        """readiness(): None once the control plane serves, else why not (for /readyz);
        tunnels: what serves /tunnels/... (tunnels.Tunnels: sandboxes' ports)."""
        self.routes = routes
        self.dispatch = dispatch
        self.tokens = tokens
        self.metrics = metrics
        self.readiness = readiness or (lambda: None)
        self.tunnels = tunnels

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return
        route = self._route(scope)
        counted = send if self.metrics is None or scope["type"] != "http" else self._counted(send)
        if scope["path"] in OWN_PATHS and scope["type"] == "http" and not (route[0] and route[2] == ""):
            # Not for a function a host name (LABEL.domain) routes to: the whole path is its own.
            return await self._own(scope, counted)
        if self.tunnels is not None and serves_tunnel(scope["path"]) and not (route[0] and route[2] == ""):
            return await self.tunnels(scope, receive, counted)
        if (self.routes.dashboard_url and scope["type"] == "http" and Dashboard.serves(scope["path"])
                and not (route[0] and route[2] == "")):
            query = scope.get("query_string", b"").decode("latin-1")
            target = self.routes.dashboard_url + scope["path"] + (f"?{query}" if query else "")
            return await _answer(counted, 307, f"the dashboard is at {target}\n".encode(),
                                 headers=[(b"location", target.encode())])
        await self._serve(scope, receive, send, route)

    def _counted(self, send):
        responded = self.metrics.responded

        async def counted(message):
            if message["type"] == "http.response.start":
                responded(message["status"])
            await send(message)
        return counted

    async def _own(self, scope, send):
        path = scope["path"]
        if path == "/healthz":
            return await _answer(send, 200, b"ok\n")
        if path == "/readyz":
            why = self.readiness()
            return await _answer(send, 503, f"not ready: {why}\n".encode()) if why else await _answer(send, 200,
                                                                                                       b"ready\n")
        if self.metrics is None:
            return await _answer(send, 404, b"this control plane serves no metrics\n")
        refused = check_access(self.metrics.sched.identity, scope["headers"], scope.get("client"))
        if refused:
            status, why = refused
            return await _answer(send, status, why.encode() + b"\n")
        await _answer(send, 200, self.metrics.scrape(), CONTENT_TYPE.encode())

    async def _serve(self, scope, receive, send, route):
        """A request for a function's endpoint (route: see _route). Its answer's status is counted
        here (metrics), not by a wrapper around send for each of its messages."""
        fn, endpoint, root, path = route
        responded = self.metrics.responded if self.metrics is not None and scope["type"] == "http" else None
        answer = self._counted(send) if responded is not None else send  # for the gateway's own answers
        if fn is None:
            # Which labels exist is not said: they name other workspaces' apps.
            return await _refuse(scope, answer, 404, f"no web endpoint is served at {scope['path']!r}; "
                                 "URLs look like /LABEL/... (a function's web_url says its own)")
        spec = fn.definition.web_methods[endpoint] if endpoint else fn.definition.web
        if spec.requires_proxy_auth and not self.tokens.check(scope["headers"], fn.app.workspace):
            return await _refuse(scope, answer, 401, "this endpoint requires proxy auth: send the Ember-Key and "
                                 "Ember-Secret headers of a proxy token of its workspace (create one with "
                                 "`ember proxy-token create`)")
        first = await receive()
        if first["type"] in ("http.disconnect", "websocket.disconnect"):
            return
        web = WebRequest(_input(scope, first, root, path, endpoint))
        request = web.request
        inp = web_input(web)
        self.dispatch.submit(fn, [inp], soon=True)
        relay = None
        try:
            if scope["type"] == "websocket" or request.more_body:
                relay = asyncio.create_task(self._relay_requests(inp, receive))
            while events := await web.next_events():
                for ev in events:
                    if ev.type == "http.response.body" and ev.more_body and relay is None:
                        # A streamed response: watch for the client going away, to tell the app.
                        relay = asyncio.create_task(self._relay_requests(inp, receive))
                    web.started = True
                    if responded is not None and ev.type == "http.response.start":
                        responded(ev.status)
                    await send(to_message(ev))
            out = web.final
            if out.status != Output.SUCCESS and not web.started:
                # The app's own exception already answered (500) in the container; these are
                # the ways a request can fail around it.
                status = {Output.CANCELLED: 503, Output.TIMEOUT: 504}.get(out.status, 500)
                await _refuse(scope, answer, status, f"{fn.name}: {out.error}")
        except OSError:  # the client went away while we answered
            self.dispatch.abandon(inp)
        finally:
            if relay is not None:
                relay.cancel()
            self.dispatch.abandon(inp)  # if it is still open: its client is gone

    def _route(self, scope):
        """(function, class method, root path, path below it) for a request; function None if
        nothing serves it."""
        for name, value in scope["headers"]:
            if name == b"host":
                if b"." in value:
                    fn, endpoint = self.routes.lookup(value.split(b".", 1)[0].decode("latin-1"))
                    if fn is not None:
                        return fn, endpoint, "", scope["path"]
                break
        label, _, rest = scope["path"].lstrip("/").partition("/")
        return *self.routes.lookup(label), f"/{label}", "/" + rest

    async def _relay_requests(self, inp: InputState, receive):
        """The rest of the request, to its container, until the client is done."""
        while True:
            msg = await receive()
            if inp.done:
                return
            self.dispatch.web_events(inp, [to_event(inp.input_id, msg)])
            if msg["type"].endswith("disconnect"):
                return


def _input(scope, first: dict, root: str, path: str, endpoint: str) -> api_pb2.Input:
    """A request (its ASGI scope and first message) as its container's Input, made in place: an
    HttpRequest made apart would be copied into it, and each header too."""
    msg = api_pb2.Input(attempt=1)
    req = msg.http
    req.type = scope["type"]
    req.method = scope.get("method", "GET")
    req.path = path
    req.query_string = scope.get("query_string", b"")
    req.scheme = scope.get("scheme", "http")
    req.http_version = scope.get("http_version", "1.1")
    req.root_path = root
    client = scope.get("client") or ("", 0)
    req.client_host = client[0] or ""
    req.client_port = client[1] or 0
    if "subprotocols" in scope:
        req.subprotocols.extend(scope["subprotocols"])
    add = req.headers.add
    for k, v in scope["headers"]:
        add(name=k, value=v)
    req.body = first.get("body", b"")
    req.more_body = first.get("more_body", False)
    req.endpoint = endpoint
    return msg


async def _refuse(scope, send, status: int, text: str):
    if scope["type"] == "websocket":
        # Before a WebSocket is accepted, closing it answers the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": text[:120]})
        return
    await _answer(send, status, text.encode() + b"\n")


async def _answer(send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8", headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    def capture_signals(self):
        # The control plane handles its own signals; uvicorn must not take them over.
        return contextlib.nullcontext()


def bind(host: str, port: int, fallback: bool, flag: str = "--http") -> socket.socket:
    """A listening socket of the gateway (or of the dashboard: flag says which option sets its
    address); with fallback, any free port if this one is taken."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        if not fallback:
            sock.close()
            raise OSError(f"{flag} {host}:{port}: cannot listen there ({e.strerror}): pass another "
                          f"{flag} HOST:PORT (port 0 for any free one)") from None
        log.warning("port %d (%s) is taken (%s): listening on a free port instead", port, flag, e.strerror)
        sock.bind((host, 0))
    sock.listen(2048)
    return sock


def url_host(host: str) -> str:
    """The host part of the gateway's URLs, for a gateway listening on `host` (when --web-url does
    not say): for a wildcard (every address) the machine's name, which clients on other machines
    can look up and `--tls auto`'s certificate holds, not 0.0.0.0, which reaches only this machine."""
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


async def start(app, sock: socket.socket, server_tls=None) -> tuple[asyncio.Task, uvicorn.Server]:
    """Serve an ASGI application (the Gateway, or the Dashboard on its own port) on a bound
    socket, over HTTPS with server_tls (a tls.ServerTLS); returns its task and its server (set
    should_exit to stop)."""
    ssl = {"ssl_certfile": str(server_tls.cert_file), "ssl_keyfile": str(server_tls.key_file)} if server_tls else {}
    config = uvicorn.Config(app, http="httptools", ws="websockets-sansio", lifespan="off",
                            access_log=False, log_level="warning", server_header=False, backlog=2048,
                            # A request's client is its peer: X-Forwarded-For is a claim of the
                            # network (it reaches the app as a header), and parsing it cost each request.
                            proxy_headers=False,
                            timeout_graceful_shutdown=2, **ssl)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise OSError("the HTTP gateway did not start")
        await asyncio.sleep(0.01)
    return task, server
