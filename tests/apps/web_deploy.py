"""A web endpoint whose answer names its version (VERSION is replaced by the tests)."""

import ember

app = ember.App("webdeploy")


async def answer(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"version VERSION"})


@app.function()
@ember.asgi_app()
def hello():
    return answer
