"""Sandbox tunnels: a port a sandbox's process listens on, served by the HTTP gateway.

`Sandbox.create(encrypted_ports=[8000])` declares a port; the gateway serves it at
`/tunnels/SANDBOX_ID/8000/...` (sb.tunnels() gives the URL). Each HTTP request there is checked
here (a token of the sandbox's workspace, unless its ports are public), then carried by one exec
session of the sandbox's container (execs.py: over its worker's stream, so workers on other
hosts serve tunnels as they serve execs): the exec is no command but a relay of its stdin and
stdout to the port on the container's loopback (worker/sandbox.relay_port), run inside the
container's network namespace, so it reaches nothing the sandbox could not. The request goes
down as HTTP/1.1 bytes with `Connection: close`; the answer comes up as bytes, parsed here and
sent on as the gateway's response (streamed as it comes). A WebSocket is shaken hands again
with the port, then its messages go both ways as frames.

Refused without a word of what exists: a request without a valid token (401), one whose token
is another workspace's, a forged sandbox id, a port not declared, an ended sandbox (404, all
alike). The Ember token of a request is never passed to the sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import typing
import urllib.parse

import httptools
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from ..proto import api_pb2
from .auth import ADMIN, TOKEN_ID_KEY, TOKEN_SECRET_KEY, WORKSPACE, Forbidden, Unauthenticated
from .dashboard.sessions import COOKIE as SESSION_COOKIE

if typing.TYPE_CHECKING:
    from .execs import Execs
    from .sandboxes import Sandboxes, SandboxState

log = logging.getLogger("ember.gateway")

PREFIX = "/tunnels/"
Info = api_pb2.SandboxInfo
# Headers of one hop, not to be passed on (RFC 9110 7.6.1), and the gateway's own.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
              b"transfer-encoding", b"upgrade", b"expect"}
FORWARDED = {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-prefix"}  # the gateway's word, not the client's
HOW = ("send `Authorization: Bearer TOKEN_ID:TOKEN_SECRET` with a token of the sandbox's workspace "
       "(EMBER_TOKEN_ID and EMBER_TOKEN_SECRET), or create the sandbox with public_ports=True")


def tunnel_url(base_url: str, sandbox_id: str, port: int) -> str:
    return f"{base_url}{PREFIX}{sandbox_id}/{port}"


def tunnel_infos(box: SandboxState, base_url: str) -> list[api_pb2.SandboxTunnel]:
    """Its ports' tunnels, at the gateway whose URL is base_url."""
    scheme, _, rest = base_url.partition("://")
    authority = rest.split("/", 1)[0]
    host, colon, port = authority.rpartition(":")
    if not colon or not port.isdigit():
        host, port = authority, "443" if scheme == "https" else "80"
    host = host.strip("[]")
    return [api_pb2.SandboxTunnel(container_port=p, url=tunnel_url(base_url, box.sandbox_id, p), host=host,
                                  port=int(port), unencrypted=unencrypted, public=box.public_ports)
            for p, unencrypted in sorted(box.ports.items())]


def serves(path: str) -> bool:
    return path.startswith(PREFIX) or path == PREFIX.rstrip("/")


class Tunnels:
    def __init__(self, sandboxes: Sandboxes, execs: Execs, identity):
        self.sandboxes = sandboxes
        self.execs = execs
        self.identity = identity

    async def __call__(self, scope, receive, send):
        sandbox_id, _, rest = scope["path"][len(PREFIX):].partition("/")
        port_text, slash, path = rest.partition("/")
        port = int(port_text) if port_text.isdigit() and len(port_text) < 6 else 0
        box = self.sandboxes.get(sandbox_id, None)
        declared = box is not None and port in box.ports
        token_given = False
        if not (declared and box.public_ports):
            refused, token_given = self._check(scope["headers"], box)
            if refused:
                return await _answer(scope, send, *refused)
        else:
            token_given = self._is_ember_token(scope["headers"])
        where = f"{PREFIX}{sandbox_id}/{port_text}"
        if not declared or box.state == Info.ENDED:
            return await _answer(scope, send, 404, f"no tunnel is served at {where}: the sandbox has ended, is not "
                                 "your workspace's, or did not declare that port (Sandbox.create(encrypted_ports="
                                 "[PORT]); sb.tunnels() gives its URLs)")
        if not slash and scope["type"] == "http":  # the tunnel's root: relative links of its pages resolve below it
            query = scope.get("query_string", b"").decode("latin-1")
            return await _answer(scope, send, 308, f"{where}/", location=f"{where}/" + (f"?{query}" if query else ""))
        c = box.container
        if box.state != Info.RUNNING or c is None or not c.worker.connected:
            return await _answer(scope, send, 503, f"sandbox {sandbox_id} is not running now (it is starting, or its "
                                 "worker is away): try again in a moment", retry=True)
        relay = self._relay if scope["type"] == "http" else self._websocket
        await relay(scope, receive, send, box, port, _target(scope, path), strip_token=token_given)

    def _is_ember_token(self, headers) -> bool:
        return self._check(headers, None)[1]

    def _check(self, headers, box: SandboxState | None) -> tuple[tuple[int, str] | None, bool]:
        """(refusal or None, whether the Authorization header holds a valid Ember token)."""
        auth = next((v for k, v in headers if k == b"authorization"), None)
        if auth is None:
            return (401, f"this tunnel needs a token: {HOW}"), False
        scheme, _, credential = auth.decode("latin-1").partition(" ")
        token_id, colon, secret = credential.strip().partition(":")
        if scheme.lower() != "bearer" or not colon:
            return (401, f"the Authorization header is not `Bearer TOKEN_ID:TOKEN_SECRET`: {HOW}"), False
        try:
            who = self.identity.authenticate(((TOKEN_ID_KEY, token_id), (TOKEN_SECRET_KEY, secret)),
                                             (WORKSPACE, ADMIN))
        except Unauthenticated as e:
            return (401, f"{e}: {HOW}"), False
        except Forbidden:
            return (401, f"a worker's or container's credential reaches no tunnel: {HOW}"), True
        if box is not None and not who.is_admin and who.workspace != box.workspace:
            return (404, "no tunnel is served here for this workspace's token"), True
        return None, True

    async def _relay(self, scope, receive, send, box: SandboxState, port: int, target: str, strip_token: bool):
        outputs: asyncio.Queue = asyncio.Queue()
        c = box.container
        start = api_pb2.ExecStart(container_id=c.container_id, argv=[f"(tunnel to port {port})"], port=port)
        exec_id = self.execs.open(c, start, outputs.put_nowait)
        self.sandboxes.touched(box)
        response = _Response(send)
        pump = asyncio.create_task(self._request(scope, receive, exec_id, target, strip_token, outputs))
        try:
            errors = b""
            while True:
                out = await outputs.get()
                if out is None:  # the client went away: so does the connection to the port
                    return
                if out.data and out.fd == 2:
                    errors = (errors + out.data)[-4096:]
                elif out.data:
                    await response.feed(out.data)
                if out.exited:
                    break
            if response.started:
                await response.finish()
            else:
                why = out.error or errors.decode(errors="replace").strip() or "it closed the connection unanswered"
                await _answer(scope, send, 502, f"sandbox {box.sandbox_id}, port {port}: {why}")
        except httptools.HttpParserError as e:
            log.info("tunnel of sandbox %s port %d: not an HTTP answer (%s)", box.sandbox_id, port, e)
            if not response.started:
                await _answer(scope, send, 502, f"sandbox {box.sandbox_id}, port {port}: not an HTTP answer ({e})")
        except OSError:
            pass  # the client went away
        finally:
            pump.cancel()
            self.execs.close(exec_id)  # the relay ends, and the connection to the port with it

    async def _websocket(self, scope, receive, send, box: SandboxState, port: int, target: str, strip_token: bool):
        """A WebSocket: its handshake made again to the port (websockets' sans-I/O client), then
        its messages carried both ways as frames, until either side closes."""
        if (await receive())["type"] != "websocket.connect":
            return
        outputs: asyncio.Queue = asyncio.Queue()
        c = box.container
        start = api_pb2.ExecStart(container_id=c.container_id, argv=[f"(tunnel to port {port})"], port=port)
        exec_id = self.execs.open(c, start, outputs.put_nowait)
        self.sandboxes.touched(box)
        ws = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{target}"),
                            subprotocols=scope.get("subprotocols") or None, max_size=None)
        request = ws.connect()
        for name, value in passed_on(scope["headers"], strip_token):
            if name != b"host" and not name.startswith(b"sec-websocket-"):
                request.headers[name.decode("latin-1")] = value.decode("latin-1")
        ws.send_request(request)
        pump = None
        try:
            self._write(exec_id, b"".join(ws.data_to_send()))
            accepted, errors, early = False, b"", []
            while not accepted:
                out = await outputs.get()
                if out.fd == 2:
                    errors = (errors + out.data)[-4096:]
                elif out.data:
                    ws.receive_data(out.data)
                for event in ws.events_received():
                    if accepted:  # frames that came with the handshake's answer
                        early.append(event)
                    elif isinstance(event, Response):
                        if ws.handshake_exc is not None:
                            return await _answer(scope, send, 403, f"port {port} refused the WebSocket: "
                                                 f"{ws.handshake_exc}")
                        await send({"type": "websocket.accept", "subprotocol": ws.subprotocol,
                                    "headers": [(k.lower().encode(), v.encode()) for k, v in event.headers.raw_items()
                                                if k.lower() == "set-cookie"]})
                        accepted = True
                if out.exited and not accepted:
                    why = out.error or errors.decode(errors="replace")
                    return await _answer(scope, send, 502, f"port {port}: {why}")
            pump = asyncio.create_task(self._ws_up(receive, ws, exec_id, outputs))
            await self._ws_down(outputs, ws, exec_id, send, early)
        except OSError:
            pass  # the client went away
        finally:
            if pump is not None:
                pump.cancel()
            self.execs.close(exec_id)

    async def _ws_up(self, receive, ws: ClientProtocol, exec_id: str, outputs: asyncio.Queue):
        """The client's messages, to the port; once it goes away, its close, and None in outputs."""
        try:
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    code = msg.get("code", 1000)
                    ws.send_close(code if code not in (1005, 1006) else 1000)  # (those may not be sent)
                    self._write(exec_id, b"".join(ws.data_to_send()))
                    return
                if msg.get("text") is not None:
                    ws.send_text(msg["text"].encode())
                else:
                    ws.send_binary(msg.get("bytes") or b"")
                self._write(exec_id, b"".join(ws.data_to_send()))
        finally:
            outputs.put_nowait(None)

    async def _ws_down(self, outputs: asyncio.Queue, ws: ClientProtocol, exec_id: str, send, early: list):
        """The port's messages, to the client, until it closes (or the connection ends)."""
        parts: list[bytes] = []
        kind = Opcode.TEXT
        out = api_pb2.ExecOutput()
        while True:
            if not early:
                out = await outputs.get()
                if out is None:  # the client went away
                    return
                if out.data and out.fd != 2:
                    ws.receive_data(out.data)
                if out.exited:
                    ws.receive_eof()
            frames, early = early + list(ws.events_received()), []
            for frame in frames:
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                    kind = frame.opcode if frame.opcode != Opcode.CONT else kind
                    parts.append(frame.data)
                    if frame.fin:
                        data, parts = b"".join(parts), []
                        await send({"type": "websocket.send", **({"text": data.decode()} if kind == Opcode.TEXT
                                                                  else {"bytes": data})})
                elif frame.opcode == Opcode.CLOSE:
                    self._write(exec_id, b"".join(ws.data_to_send()))
                    await send({"type": "websocket.close", "code": ws.close_code or 1000,
                                "reason": ws.close_reason or ""})
                    return
            self._write(exec_id, b"".join(ws.data_to_send()))  # pongs, and the close's answer
            if out.exited:
                await send({"type": "websocket.close", "code": 1011 if out.error else 1000})
                return

    async def _request(self, scope, receive, exec_id: str, target: str, strip_token: bool, outputs: asyncio.Queue):
        """The request, as HTTP/1.1 bytes, to the exec's stdin; its body as the client sends it;
        then, once the client goes away (before the answer's end), None in outputs."""
        try:
            if await self._send_request(scope, receive, exec_id, target, strip_token):
                while (await receive())["type"] != "http.disconnect":
                    pass
        finally:
            outputs.put_nowait(None)

    async def _send_request(self, scope, receive, exec_id: str, target: str, strip_token: bool) -> bool:
        """False if the client went away meanwhile."""
        headers, chunked = [], True
        for name, value in passed_on(scope["headers"], strip_token):
            if name == b"content-length":
                chunked = False
            headers.append(b"%s: %s\r\n" % (name, value))
        client = scope.get("client") or ("", 0)
        headers.append(b"x-forwarded-for: %s\r\n" % (client[0] or "").encode())
        headers.append(b"x-forwarded-proto: %s\r\n" % scope.get("scheme", "http").encode())
        headers.append(b"x-forwarded-prefix: %s\r\n" % _prefix(scope).encode())
        request_target = target.encode("latin-1")
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return False
        body, more = msg.get("body", b""), msg.get("more_body", False)
        # A body of unknown length (the client's was chunked) goes on chunked.
        chunked = chunked and (bool(body) or more)
        if chunked:
            headers.append(b"transfer-encoding: chunked\r\n")
        head = b"%s %s HTTP/1.1\r\n%sconnection: close\r\n\r\n" % (scope["method"].encode(), request_target,
                                                                      b"".join(headers))
        while True:
            self._write(exec_id, head + _chunk(body, chunked) + (b"0\r\n\r\n" if chunked and not more else b""))
            if not more:
                return True
            head, msg = b"", await receive()
            if msg["type"] == "http.disconnect":
                return False
            body, more = msg.get("body", b""), msg.get("more_body", False)

    def _write(self, exec_id: str, data: bytes):
        if data:
            self.execs.input(exec_id, api_pb2.ExecInput(data=data))


def _target(scope, path: str) -> str:
    """The request's path below the tunnel, as the client sent it (still percent-encoded: a
    decoded one could carry a line break into the request to the port), with its query."""
    raw = scope.get("raw_path")
    parts = raw.split(b"/", 4) if raw else []
    target = ("/" + parts[4].decode("latin-1")) if len(parts) == 5 else urllib.parse.quote("/" + path)
    if any(ch <= " " or ch == "\x7f" for ch in target):  # (a request line httptools took has none)
        target = urllib.parse.quote(target, safe="/%")
    query = scope.get("query_string", b"").decode("latin-1")
    return target + (f"?{query}" if query else "")


def passed_on(headers, strip_token: bool) -> list[tuple[bytes, bytes]]:
    """A request's headers as the sandbox gets them: not those of one hop, nor the client's
    X-Forwarded-*, nor Ember's credentials (its token; a dashboard session's cookie)."""
    kept = []
    for name, value in headers:
        if name in HOP_BY_HOP or name in FORWARDED or (name == b"authorization" and strip_token):
            continue
        if name == b"cookie":
            value = b"; ".join(c for c in (c.strip() for c in value.split(b";"))
                               if c and not c.startswith(SESSION_COOKIE.encode() + b"="))
            if not value:
                continue
        kept.append((name, value))
    return kept


def _prefix(scope) -> str:
    """/tunnels/SANDBOX_ID/PORT of the request."""
    return "/".join(scope["path"].split("/", 4)[:4])


def _chunk(data: bytes, chunked: bool) -> bytes:
    if not chunked or not data:
        return data
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Response:
    """The port's answer, parsed as it comes, sent on as ASGI messages."""

    def __init__(self, send):
        self.send = send
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.bodies: list[bytes] = []
        self.head_done = False
        self.complete = False
        self.started = False

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes):
        if name.lower() not in HOP_BY_HOP:
            self.headers.append((name.lower(), value))

    def on_headers_complete(self):
        self.head_done = True

    def on_body(self, body: bytes):
        self.bodies.append(body)

    def on_message_complete(self):
        self.complete = True

    async def feed(self, data: bytes):
        if self.complete:
            return  # (what follows a complete answer on a `Connection: close` is not the client's)
        self.parser.feed_data(data)
        if self.head_done and not self.started:
            self.started = True
            await self.send({"type": "http.response.start", "status": self.parser.get_status_code(),
                             "headers": self.headers})
        if self.started and (self.bodies or self.complete):
            body, self.bodies = b"".join(self.bodies), []
            await self.send({"type": "http.response.body", "body": body, "more_body": not self.complete})

    async def finish(self):
        """The port closed the connection: the answer ends here (one without a length ends so)."""
        if not self.complete:
            self.complete = True
            await self.send({"type": "http.response.body", "body": b"".join(self.bodies), "more_body": False})


async def _answer(scope, send, status: int, text: str, location: str = "", retry: bool = False):
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": text[:120]})
        return
    body = text.encode() + b"\n"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if location:
        headers.append((b"location", location.encode()))
    if retry:
        headers.append((b"retry-after", b"1"))
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="ember"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
