"""ASGI messages as they travel between the gateway and containers: one HttpEvent each.

The gateway turns its client's messages (request body, disconnect, WebSocket receive) into
events for the container, and the container's events (response start and body, WebSocket
accept, send and close) back into messages; the container does the reverse. One codec serves
both directions.
"""

from .proto import api_pb2

HttpEvent = api_pb2.HttpEvent


def _add_headers(ev: HttpEvent, msg: dict):
    add = ev.headers.add  # made in place: a message made apart and appended would be copied
    for k, v in msg.get("headers", ()):
        add(name=bytes(k), value=bytes(v))


def to_event(input_id: str, msg: dict) -> HttpEvent:
    return fill_event(HttpEvent(input_id=input_id), msg)


def fill_event(ev: HttpEvent, msg: dict) -> HttpEvent:
    """An empty event (one added in place to the message that carries it) made the ASGI message msg."""
    ev.type = kind = msg["type"]
    if kind in ("http.request", "http.response.body"):
        ev.body = bytes(msg.get("body", b""))
        ev.more_body = msg.get("more_body", False)
    elif kind == "http.response.start":
        ev.status = msg["status"]
        _add_headers(ev, msg)
    elif kind in ("websocket.send", "websocket.receive"):
        if msg.get("text") is not None:
            ev.is_text, ev.text = True, msg["text"]
        else:
            ev.body = msg.get("bytes") or b""
    elif kind == "websocket.accept":
        ev.subprotocol = msg.get("subprotocol") or ""
        _add_headers(ev, msg)
    elif kind in ("websocket.close", "websocket.disconnect"):
        ev.code = msg.get("code", 1000)
        ev.reason = msg.get("reason") or ""
    elif kind != "http.disconnect":
        raise ValueError(f"an ASGI message Ember does not relay: {kind!r}")
    return ev


def to_message(ev: HttpEvent) -> dict:
    kind = ev.type
    if kind in ("http.request", "http.response.body"):
        return {"type": kind, "body": ev.body, "more_body": ev.more_body}
    if kind == "http.response.start":
        return {"type": kind, "status": ev.status, "headers": [(h.name, h.value) for h in ev.headers]}
    if kind in ("websocket.send", "websocket.receive"):
        return {"type": kind, "text": ev.text} if ev.is_text else {"type": kind, "bytes": ev.body}
    if kind == "websocket.accept":
        return {"type": kind, "subprotocol": ev.subprotocol or None, "headers": [(h.name, h.value) for h in ev.headers]}
    if kind in ("websocket.close", "websocket.disconnect"):
        return {"type": kind, "code": ev.code or 1000, "reason": ev.reason}
    return {"type": kind}
