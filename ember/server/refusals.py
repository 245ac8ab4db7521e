"""How the control plane refuses a request: with INVALID_ARGUMENT and one line saying why.

Two kinds of request are refused here, for every RPC of the three services alike: one whose
content breaks a rule (a handler raised validate.Invalid, naming the field), and one whose bytes
do not parse as its message at all. Left to itself, grpc answers the latter with UNKNOWN and logs
a traceback for each such request or stream frame.

Why an interceptor rather than only a deserializer that catches DecodeError: whatever a
deserializer raises, grpc still answers UNKNOWN with a traceback, since it runs before any
handler code. So the interceptor swaps in a deserializer that returns the error instead of
raising it, and wraps each handler to answer that error (and Invalid) with INVALID_ARGUMENT:
one place, and no handler has to know.
"""

import contextlib
import logging

import grpc
from google.protobuf.message import DecodeError

from .validate import Invalid

log = logging.getLogger("ember.server")


class Malformed(Exception):
    """A request, or a frame of a stream, whose bytes are not its message."""


class Refusals(grpc.aio.ServerInterceptor):
    def __init__(self):
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}  # method -> its wrapped handler

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None or handler.request_deserializer is None:
                return handler  # an unknown method: grpc answers UNIMPLEMENTED
            wrapped = self._handlers[method] = _wrap(handler, method)
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    parse = handler.request_deserializer
    message = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    name = message.full_name if message is not None else "its request message"

    def deserialize(data: bytes):
        try:
            return parse(data)
        except DecodeError as e:
            why = str(e).rpartition(": ")[2]  # its text names the type too: "Error parsing ...: <why>"
            return Malformed(f"{method}: the request could not be parsed as {name} ({why}); send a serialized "
                             f"{name}, from a client built from the same api.proto")

    async def checked(requests):
        async for req in requests:
            if isinstance(req, Malformed):
                raise req
            yield req

    @contextlib.asynccontextmanager
    async def refusing(context):
        try:
            yield
        except Invalid as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Malformed as e:
            log.warning("refused a malformed request: %s", e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    def unary_request(req):
        if isinstance(req, Malformed):
            raise req
        return req

    if handler.unary_unary:
        inner = handler.unary_unary

        async def behavior(req, context):
            async with refusing(context):
                return await inner(unary_request(req), context)
        return handler._replace(request_deserializer=deserialize, unary_unary=behavior)
    if handler.unary_stream:
        inner = handler.unary_stream

        async def behavior(req, context):
            async with refusing(context):
                async with contextlib.aclosing(inner(unary_request(req), context)) as responses:
                    async for resp in responses:
                        yield resp
        return handler._replace(request_deserializer=deserialize, unary_stream=behavior)
    if handler.stream_unary:
        inner = handler.stream_unary

        async def behavior(requests, context):
            async with refusing(context):
                return await inner(checked(requests), context)
        return handler._replace(request_deserializer=deserialize, stream_unary=behavior)
    inner = handler.stream_stream

    async def behavior(requests, context):
        async with refusing(context):
            async with contextlib.aclosing(inner(checked(requests), context)) as responses:
                async for resp in responses:
                    yield resp
    return handler._replace(request_deserializer=deserialize, stream_stream=behavior)
