"""What the control plane shows Prometheus at the gateway's /metrics, and who may see it.

Most figures are read from the scheduler's state when a scrape asks (a collector), so the hot
path pays nothing for them; the few that only a moment sees (an input's end, a cold start, a
commit, a response) are counted where they happen, with a plain increment or a histogram.
The registry is the control plane's own, never prometheus_client's global one.
"""

import ipaddress
import time

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from ..proto import api_pb2
from .auth import ADMIN, TOKEN_ID_KEY, TOKEN_SECRET_KEY, Forbidden, Unauthenticated

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CONTAINER_STATES = {api_pb2.CONTAINER_STATE_STARTING: "starting", api_pb2.CONTAINER_STATE_READY: "ready",
                    api_pb2.CONTAINER_STATE_DISCONNECTED: "disconnected"}
HOW_TO_SCRAPE = ("send `Authorization: Bearer TOKEN_ID:TOKEN_SECRET` with an admin token (`ember token new --role "
                 "admin`), or scrape from this machine (loopback) without the header")


class Metrics:
    """The control plane's registry: scrape-time figures from the scheduler, and the counted ones."""

    def __init__(self, sched, dashboard=None):
        self.sched = sched
        self.dashboard = dashboard  # dashboard.Dashboard, for its open streams
        self.registry = CollectorRegistry(auto_describe=False)
        self.cold_starts = Histogram(
            "ember_cold_start_seconds", "From asking a worker for a container to the container being ready",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=self.registry)
        self.commits = Histogram(
            "ember_store_commit_seconds", "How long the store takes to commit a transaction (group commit)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1), registry=self.registry)
        self.responses: dict[int, int] = {}  # gateway responses by HTTP status
        self.registry.register(_Collector(self))
        sched.fleet.on_cold_start = self.cold_starts.observe
        sched.store.on_commit = self.commits.observe

    def responded(self, status: int):
        self.responses[status] = self.responses.get(status, 0) + 1

    def scrape(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        sched = self.metrics.sched
        labels = ["workspace", "app", "function"]
        queued = GaugeMetricFamily("ember_inputs_queued", "Inputs waiting for a container", labels=labels)
        running = GaugeMetricFamily("ember_inputs_running", "Inputs a container holds now", labels=labels)
        completed = CounterMetricFamily("ember_inputs_completed", "Inputs that ended with success "
                                        "(since the function's app started here)", labels=labels)
        failed = CounterMetricFamily("ember_inputs_failed", "Inputs that ended failed, timed out or cancelled, "
                                     "after their retries", labels=labels)
        containers = GaugeMetricFamily("ember_function_containers", "Containers of a function", labels=labels)
        for fn in sched.apps.functions():
            key = [fn.app.workspace, fn.app.name, fn.name]
            queued.add_metric(key, sum(not inp.done for inp in fn.pending))
            running.add_metric(key, sum(len(c.held) for c in fn.containers.values()))
            completed.add_metric(key, fn.completed)
            failed.add_metric(key, fn.failed)
            containers.add_metric(key, len(fn.containers))
        yield from (queued, running, completed, failed, containers)

        by_state = dict.fromkeys(CONTAINER_STATES.values(), 0)
        for c in sched.fleet.containers():
            name = CONTAINER_STATES.get(c.state, "unknown")
            by_state[name] = by_state.get(name, 0) + 1
        states = GaugeMetricFamily("ember_containers", "Containers by state", labels=["state"])
        for state, n in by_state.items():
            states.add_metric([state], n)
        yield states

        now = sched.clock()
        workers = GaugeMetricFamily("ember_workers", "Workers by state", labels=["state"])
        free_cpu = GaugeMetricFamily("ember_worker_free_cpu", "CPUs a worker has free", labels=["worker"])
        free_mem = GaugeMetricFamily("ember_worker_free_memory_bytes", "Memory a worker has free", labels=["worker"])
        counts = {"connected": 0, "disconnected": 0, "draining": 0, "cordoned": 0}
        for w in sched.fleet.workers():
            if not w.connected:
                counts["disconnected"] += 1
                continue
            counts["connected"] += 1
            counts["draining"] += w.draining
            counts["cordoned"] += w.cordoned(now)
            cpu, memory_mb = w.free()
            free_cpu.add_metric([w.name], cpu)
            free_mem.add_metric([w.name], memory_mb * 2**20)
        for state, n in counts.items():
            workers.add_metric([state], n)
        yield from (workers, free_cpu, free_mem)

        dispatch = sched.dispatch
        yield SummaryMetricFamily("ember_dispatch_latency_seconds", "How long inputs waited in their function's "
                                  "queue before a container took them", count_value=dispatch.dispatched,
                                  sum_value=dispatch.waited)

        responses = CounterMetricFamily("ember_gateway_requests", "Gateway responses by HTTP status",
                                        labels=["status"])
        for status, n in sorted(self.metrics.responses.items()):
            responses.add_metric([str(status)], n)
        yield responses

        if self.metrics.dashboard is not None:
            yield GaugeMetricFamily("ember_dashboard_streams", "Dashboard event streams open now (one per open "
                                    "live page)", value=self.metrics.dashboard.streams)


def check_access(identity, headers, client) -> tuple[int, str] | None:
    """None if this request may read the metrics, else (HTTP status, why). With an Authorization
    header, only an admin token's is accepted (wherever the request comes from); without one,
    only loopback."""
    auth = next((v for k, v in headers if k == b"authorization"), None)
    if auth is None:
        host = (client or ("", 0))[0] or ""
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass  # a unix socket or no address: not loopback
        return 401, f"metrics need a token from {host or 'this client'}: {HOW_TO_SCRAPE}"
    scheme, _, credential = auth.decode("latin-1").partition(" ")
    token_id, colon, secret = credential.strip().partition(":")
    if scheme.lower() != "bearer" or not colon:
        return 401, f"the Authorization header is not `Bearer TOKEN_ID:TOKEN_SECRET`: {HOW_TO_SCRAPE}"
    try:
        identity.authenticate(((TOKEN_ID_KEY, token_id), (TOKEN_SECRET_KEY, secret)), (ADMIN,))
    except Unauthenticated as e:
        return 401, str(e)
    except Forbidden:
        return 403, f"only an admin token may read the metrics: {HOW_TO_SCRAPE}"
    return None


def timed(observe, start: float):
    """Observe the seconds since start (time.perf_counter), if anyone listens."""
    if observe is not None:
        observe(time.perf_counter() - start)
