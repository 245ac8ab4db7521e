"""What a live dashboard page costs the control plane's event loop (issue 16).

    python bench/dashboard.py                 # 100,000 calls in memory
    python bench/dashboard.py --calls 1000000

A real Scheduler on a SQLite store, one app with one function, and N calls of it in the ledger
(finished ones, each with an output, as a spawn of N leaves them for minutes). Times one render
of the app's live fragment as its event stream makes it: the functions' figures (every second)
and, every 5 s, the calls table, which looks at every call in memory; and the containers and
workers fragments. Each figure is the median of 20 renders, in milliseconds of the loop's time.
"""

import argparse
import asyncio
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from ember.proto import api_pb2  # noqa: E402
from ember.server.dashboard.sessions import Session  # noqa: E402
from ember.server.dashboard.views import Dashboard  # noqa: E402
from ember.server.auth import ADMIN, Principal  # noqa: E402
from ember.server.ledger import CallState  # noqa: E402
from ember.server.scheduler import Scheduler  # noqa: E402
from ember.server.store import open_store  # noqa: E402


def median_ms(render, n=20) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        render()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


async def run(args):
    store = open_store(pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-dash-")) / "ember.db")
    sched = Scheduler(store, lease_timeout=5, worker_timeout=5, app_timeout=600, output_retention=3600)
    app_id = sched.apps.create_app("main", "bench")
    fid = sched.apps.create_function(app_id, api_pb2.FunctionDefinition(name="ident"))
    fn = sched.apps.function(fid)
    fn.durations.extend(0.001 * (i % 7) for i in range(fn.durations.maxlen))
    for i in range(args.calls):
        call = CallState(f"fc-{i}", fn, 1, 1, 2)
        call.outputs.append(api_pb2.CallOutput(seq=1, output=api_pb2.Output(status=api_pb2.Output.SUCCESS)))
        sched.ledger._calls[call.call_id] = call  # what a spawn of N leaves in memory
    # An app of few, old calls: its look goes through the latest 10,000 of the others.
    quiet_id = sched.apps.create_app("main", "quiet")
    quiet = sched.apps.function(sched.apps.create_function(quiet_id, api_pb2.FunctionDefinition(name="rare")))
    sched.ledger._calls = {"fc-old": CallState("fc-old", quiet, 1, 1, 2), **sched.ledger._calls}
    dash = Dashboard(sched)
    session = Session(Principal(ADMIN, "main", "tk-bench"), "csrf", time.time() + 3600)
    state: dict = {}
    dash.app_fragment(session, app_id, state)
    every_second = median_ms(lambda: dash.app_fragment(session, app_id, state))
    with_calls = median_ms(lambda: dash.app_fragment(session, app_id, {}))
    other = median_ms(lambda: dash.app_fragment(session, quiet_id, {}))
    containers = median_ms(lambda: dash.containers_fragment(session, state))
    workers = median_ms(lambda: dash.workers_fragment(session, state))
    print(f"# dashboard renders, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.calls} calls in memory")
    print(f"app page, functions' figures (every second)     {every_second:8.3f} ms")
    print(f"app page, with the calls table (every 5 s)      {with_calls:8.3f} ms")
    print(f"another app's page, with its calls table        {other:8.3f} ms")
    print(f"containers page (no container)                  {containers:8.3f} ms")
    print(f"workers page (no worker)                        {workers:8.3f} ms")
    print(f"loop time per open app page: {(every_second * 4 + with_calls) / 5:.2f} ms a second")
    store.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=100_000)
    asyncio.run(run(p.parse_args()))  # the store commits on the loop, as in the control plane


if __name__ == "__main__":
    main()
