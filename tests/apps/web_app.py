"""Web endpoints of every kind, for tests/test_web.py."""

import asyncio
import os
import subprocess
import sys
import time

import ember

app = ember.App("webtest")
fastapi_image = ember.Image.debian_slim().pip_install("fastapi==0.163.2")
SERVER_PORT = 18765


@app.function(image=fastapi_image)
@ember.fastapi_endpoint()
def square(x: int, label: str = "result"):
    return {label: x * x}


@app.function(image=fastapi_image)
@ember.fastapi_endpoint(method="POST", docs=True)
async def echo(item: dict):
    print(f"echo got {item}")
    return {"got": item, "pid": os.getpid()}


@app.function(image=fastapi_image, max_containers=3)
@ember.fastapi_endpoint()
def slow(seconds: float = 1.0):
    time.sleep(seconds)
    return {"pid": os.getpid()}


@app.function()
def url_of(f):
    """The web URL of a Function passed in (pickled into this container)."""
    return f.get_web_url()


in_flight = {"now": 0, "max": 0}


async def raw_asgi(scope, receive, send):
    """Echo, streaming, a crash, concurrency and a WebSocket, without any framework."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (msg := await receive())["type"] != "websocket.disconnect":
            if msg.get("text") == "close":
                await send({"type": "websocket.close", "code": 1000})
                return
            reply = {"text": "echo:" + msg["text"]} if msg.get("text") is not None else {"bytes": msg["bytes"][::-1]}
            await send({"type": "websocket.send", **reply})
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    route = scope["path"][len(scope["root_path"]):]
    if route == "/crash":
        raise RuntimeError("the handler crashed on purpose")
    if route == "/die":
        os._exit(3)
    if route == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
        return
    if route == "/wait":
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.5)
        in_flight["now"] -= 1
    text = (f"{scope['method']} {route} q={scope['query_string'].decode()} body={body.decode()} "
            f"client={scope['client'][0]} max_in_flight={in_flight['max']} pid={os.getpid()}")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text.encode()})


@app.function(max_containers=1)
@ember.concurrent(max_inputs=20)
@ember.asgi_app(label="raw")
def raw():
    return raw_asgi


def wsgi(environ, start_response):
    body = environ["wsgi.input"].read().decode()
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Script", environ["SCRIPT_NAME"])])
    return [f"wsgi {environ['REQUEST_METHOD']} {environ['PATH_INFO']} ".encode(),
            f"q={environ['QUERY_STRING']} body={body}".encode()]


@app.function()
@ember.wsgi_app()
def flaskish():
    return wsgi


@app.function(max_containers=1)
@ember.web_server(SERVER_PORT, startup_timeout=10)
def files():
    os.makedirs("/tmp/ember-web-server", exist_ok=True)
    with open("/tmp/ember-web-server/hello.txt", "w") as f:
        f.write("served by a web server\n")
    subprocess.Popen([sys.executable, "-m", "http.server", str(SERVER_PORT), "--bind", "127.0.0.1",
                      "--directory", "/tmp/ember-web-server"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@app.function()
@ember.asgi_app(requires_proxy_auth=True)
def private():
    return raw_asgi


async def never_answers(scope, receive, send):
    await asyncio.sleep(60)


@app.function(timeout=1)
@ember.asgi_app()
def sleepy():
    return never_answers


@app.cls(image=fastapi_image)
@ember.concurrent(max_inputs=4)
class Model:
    @ember.enter()
    def load(self):
        self.weights = 3  # loaded once per container, before any request

    @ember.fastapi_endpoint(method="POST")
    def predict(self, x: float):
        return {"y": x * self.weights, "pid": os.getpid()}

    @ember.method()
    def scale(self, x):
        return x * self.weights
