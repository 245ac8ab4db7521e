"""The trivial endpoint of bench/web.py: the same FastAPI handler through Ember and on plain uvicorn."""

import os

import ember

app = ember.App("bench-web")
image = ember.Image.debian_slim().pip_install("fastapi==0.163.2")
CONTAINERS = int(os.environ.get("BENCH_WEB_CONTAINERS", "1"))
MAX_INPUTS = int(os.environ.get("BENCH_WEB_MAX_INPUTS", "200"))


def hello():
    return {"hello": "world"}


endpoint = app.function(image=image, max_containers=CONTAINERS, min_containers=CONTAINERS)(
    ember.concurrent(max_inputs=MAX_INPUTS)(ember.fastapi_endpoint()(hello)))


def peer():
    """The same handler as a FastAPI app, for uvicorn."""
    from fastapi import FastAPI
    api = FastAPI()
    api.get("/")(hello)
    return api
