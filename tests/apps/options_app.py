"""Functions the option tests call (tests/test_function_options.py): Modal's @app.function and
@app.cls options, and App's defaults."""

import os
import pathlib
import time

import ember

app = ember.App("option-tests", secrets=[ember.Secret.from_dict({"FROM_APP": "app", "SHARED": "app"})])


@app.function(env={"GREETING": "hi", "SHARED": "env", "SKIPPED": None},
              secrets=[ember.Secret.from_dict({"FROM_FUNCTION": "function"})])
def environment():
    return {k: os.environ.get(k) for k in ("GREETING", "SHARED", "SKIPPED", "FROM_APP", "FROM_FUNCTION")}


@app.function(max_inputs=2)
def twice_each():
    return os.environ["EMBER_CONTAINER_ID"]


@app.function(single_use_containers=True)
def once_each(_=None):
    return os.environ["EMBER_CONTAINER_ID"]


@app.function(cpu=(0.5, 4), memory=(400, 4000), region="small")
def meet(directory: str, n: int) -> int:
    """Wait (up to 60 s) until n inputs run at once, each in a container of its own; how many met."""
    d = pathlib.Path(directory)
    (d / os.environ["EMBER_CONTAINER_ID"]).touch()
    deadline = time.monotonic() + 60
    while len(list(d.iterdir())) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(list(d.iterdir()))


@app.function(buffer_containers=2)
def hold(release: str):
    while not os.path.exists(release):
        time.sleep(0.05)
    return "released"


@app.function(region="eu")
def where():
    return os.getcwd()  # under its worker's data dir


@app.function(region=["mars", "venus"])
def nowhere():
    return "ran"


@app.function(enable_memory_snapshot=True, cloud="aws", nonpreemptible=True, i6pn=True,
              experimental_options={"x": 1}, proxy=object(), routing_region="us-east")
def noted():
    return "noted"


@app.function(include_source=False)
def not_shipped():
    return "shipped after all"


@app.cls(startup_timeout=1)
class SlowStart:
    @ember.enter()
    def load(self):
        time.sleep(30)

    @ember.method()
    def ping(self):
        return "pong"


@app.cls()
class Hooks:
    @ember.enter()
    def after_snapshot(self):
        self.order = [*getattr(self, "order", []), "snap=False"]

    @ember.enter(snap=True)
    def before_snapshot(self):
        self.order = [*getattr(self, "order", []), "snap=True"]

    @ember.method()
    def order_of_hooks(self):
        return self.order


other = ember.App("option-tests-other")


@other.function()
def from_other_app(x):
    return f"other:{x}"


app.include(other)


@app.function()
def calls_other(x):
    return from_other_app.remote(x)  # an included app's function, called from a container


@app.function(restrict_modal_access=True)
def restricted(x):
    denied = []
    for use in (lambda: from_other_app.remote(x), lambda: from_other_app.spawn(x),
                lambda: ember.Dict.from_name("restricted", create_if_missing=True).put("k", x)):
        try:
            use()
            denied.append("allowed")
        except ember.exception.Error as e:
            denied.append(f"{type(e).__name__}: {e}")
    return denied
