"""The little of HTTP the dashboard needs, on the gateway's ASGI: a parsed request, answers,
and server-sent event streams that end when the browser goes away."""

import asyncio
import contextlib
import json
import urllib.parse
from http.cookies import CookieError, SimpleCookie

MAX_FORM = 64 * 1024  # bytes of a posted form


class Request:
    __slots__ = ("cookies", "headers", "method", "path", "query", "receive", "scheme")

    def __init__(self, scope, receive):
        self.method = scope.get("method", "GET")
        self.path = scope["path"]
        self.scheme = scope.get("scheme", "http")
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"),
                                                                  keep_blank_values=True).items()}
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.cookies = {}
        with contextlib.suppress(CookieError):
            self.cookies = {k: m.value for k, m in SimpleCookie(self.headers.get("cookie", "")).items()}
        self.receive = receive

    async def form(self) -> dict[str, str]:
        """A posted form's fields (application/x-www-form-urlencoded); ValueError if it is too large."""
        body = b""
        while True:
            msg = await self.receive()
            body += msg.get("body", b"")
            if len(body) > MAX_FORM:
                raise ValueError(f"the form is larger than {MAX_FORM} bytes")
            if not msg.get("more_body"):
                break
        return {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}

    def same_origin(self) -> bool:
        """Whether a POST comes from a page of this gateway (browsers send Origin with every POST;
        a form on another site would name that site)."""
        origin = self.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        return urllib.parse.urlsplit(origin).netloc == self.headers.get("host", "")


async def answer(send, status: int, body: str | bytes, content_type="text/html; charset=utf-8", headers=()):
    data = body.encode() if isinstance(body, str) else body
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        # Only what Ember serves runs: no inline script, nothing from elsewhere.
        (b"content-security-policy", b"default-src 'self'; style-src 'self'; img-src 'self' data:; "
                                      b"frame-ancestors 'none'; form-action 'self'"),
        *((k.encode(), v.encode()) for k, v in headers)]})
    await send({"type": "http.response.body", "body": data})


async def redirect(send, location: str, headers=()):
    await answer(send, 303, "", "text/plain; charset=utf-8", [("location", location), *headers])


class EventStream:
    """A text/event-stream response: `emit` sends one event; `run` serves until the producer ends or
    the browser goes away (its disconnect ends the producer: nothing runs for a closed page)."""

    def __init__(self, send, receive):
        self._send = send
        self._receive = receive

    async def emit(self, event: str, data: str):
        lines = "".join(f"data: {line}\n" for line in data.split("\n"))
        await self._send({"type": "http.response.body", "body": f"event: {event}\n{lines}\n".encode(),
                          "more_body": True})

    async def emit_json(self, event: str, value):
        await self.emit(event, json.dumps(value, separators=(",", ":")))

    async def run(self, producer):
        await self._send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no")]})
        await self._send({"type": "http.response.body", "body": b"retry: 3000\n\n", "more_body": True})
        produce = asyncio.ensure_future(producer(self))
        gone = asyncio.ensure_future(self._gone())
        try:
            await asyncio.wait((produce, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            produce.cancel()
            gone.cancel()
        if produce.done() and not produce.cancelled() and produce.exception() is None:
            with contextlib.suppress(OSError):
                await self._send({"type": "http.response.body", "body": b""})
        elif produce.done() and not produce.cancelled():
            raise produce.exception()

    async def _gone(self):
        while (await self._receive())["type"] != "http.disconnect":
            pass
