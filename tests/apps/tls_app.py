"""Functions and a web endpoint for tests/test_tls.py: reached, and calling back, over TLS."""

import ember

app = ember.App("tlstest")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def square_by_call(x: int) -> int:
    """A call from inside a container: its own client connects to the control plane too."""
    return square.remote(x)


@app.function(block_network=True)
def square_offline(x: int) -> int:
    """The same without a network: through the worker's relay, TLS end to end."""
    return square.remote(x)


async def scheme(scope, receive, send):
    """Answers with the scheme the gateway saw the request come in by."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": scope["scheme"].encode()})


@app.function()
@ember.asgi_app(label="tls-scheme")
def web():
    return scheme
