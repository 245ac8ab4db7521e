"""An app whose module cannot be imported inside a container."""

import os

import ember

app = ember.App("broken")

if os.environ.get("EMBER_CONTAINER_ID"):
    raise RuntimeError("this module refuses to load in a container")


@app.function()
def f():
    return 1
