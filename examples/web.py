"""A web endpoint: `ember serve examples/web.py`, then open the printed URL (add ?name=you).
Edit the greeting and save: the same URL answers with the new code within a second."""

import ember

app = ember.App("hello-web")
image = ember.Image.debian_slim().pip_install("fastapi[standard]")


@app.function(image=image)
@ember.fastapi_endpoint(docs=True)
def greet(name: str = "world"):
    return {"greeting": f"Hello, {name}!"}
