"""The provisioner's decisions, without processes: the control plane's own parts on a real
SQLite store, and a cluster manager that keeps its jobs in a dict (it stands in for Slurm or
Kubernetes, which test_slurm.py runs for real). Time is a clock the test moves."""

import pickle

from conftest import scenario_test

from ember.proto import api_pb2
from ember.server.provisioner import ProvisionError, Provisioner, Shape
from ember.server.provisioner.base import PENDING, RUNNING
from ember.server.provisioner.decisions import BACKOFF_FIRST
from ember.server.scheduler import Scheduler
from ember.server.store import open_store


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class ClusterManager:
    """Jobs by id; refuses what it is told to."""
    kind = "fake"

    def __init__(self):
        self.queue: dict[str, tuple[str, str]] = {}  # the jobs that have not ended: id -> (state, reason)
        self.specs = {}
        self.refuse = ""
        self.cancelled = []

    def submit(self, spec):
        if self.refuse:
            raise ProvisionError(self.refuse)
        job_id = str(len(self.specs) + 1)
        self.queue[job_id], self.specs[job_id] = (PENDING, "Resources"), spec
        return job_id

    def cancel(self, job_id):
        self.cancelled.append(job_id)
        self.queue.pop(job_id, None)

    def jobs(self, job_ids):
        return {j: s for j, s in self.queue.items() if j in job_ids}


class Plane:
    def __init__(self, tmp_path, **options):
        self.clock = Clock()
        self.store = open_store(tmp_path / "ember.db")
        self.sched = Scheduler(self.store, lease_timeout=3, worker_timeout=1e6, app_timeout=1e6,
                               output_retention=3600, clock=self.clock, later=lambda delay, callback: None)
        self.cluster = ClusterManager()
        settings = dict(max_workers=3, server_url="127.0.0.1:7070", floor=Shape(2, 1024), idle_window=60,
                        start_timeout=600, worker_backend="container", command=("ember",))
        settings.update(options)
        sched = self.sched
        self.prov = Provisioner(self.cluster, sched.fleet, sched.apps, sched.placement, sched.builds, sched.identity,
                                clock=self.clock, **settings)
        self.app_id = self.sched.apps.create_app("main", "test")
        self.sent: dict[str, list] = {}

    def function(self, name, cpu=1.0, memory_mb=256, gpu=""):
        d = api_pb2.FunctionDefinition(name=name, resources=api_pb2.Resources(cpu=cpu, memory_mb=memory_mb, gpu=gpu))
        return self.sched.apps.function(self.sched.apps.create_function(self.app_id, d))

    def call(self, fn, n=1):
        inputs = [api_pb2.Input(idx=i, args=api_pb2.Payload(data=pickle.dumps(i))) for i in range(n)]
        return self.sched.ledger.create_call("main", fn.function_id, f"fc-{fn.name}", inputs, True,
                                             maybe_exists=False)

    def connect(self, job_id):
        """The job's worker registers, as `ember worker` in it would."""
        spec = self.cluster.specs[job_id]
        self.cluster.queue[job_id] = (RUNNING, "")
        self.sent[spec.name] = []
        return self.sched.fleet.worker_connected(api_pb2.WorkerRegister(
            worker_id=f"wk-{job_id}", boot_id="b", name=spec.name, cpu=spec.shape.cpu, memory_mb=spec.shape.memory_mb,
            labels={"ember-job": f"fake:{job_id}"}), self.sent[spec.name].append, spec.token_id)

    async def step(self, seconds=0.0):
        """Time passes; the control plane's tick (placement tries again what waits), then a pass."""
        self.clock.now += seconds
        self.sched.tick()
        await self.prov.step()


def plane_test(scenario):
    return scenario_test(Plane, scenario)


@plane_test
async def test_nothing_is_asked_for_without_work(p):
    p.function("f")
    await p.step()
    await p.step(10)
    assert p.cluster.specs == {}


@plane_test
async def test_containers_that_fit_one_worker_ask_for_one(p):
    p.call(p.function("a"))
    p.call(p.function("b"))
    await p.step()
    await p.step(1)  # both still wait, but the worker asked for has room for both
    [spec] = p.cluster.specs.values()
    assert spec.shape == Shape(2, 1024)
    assert spec.worker_args("/d", "fake:1")[:2] == ["ember", "worker"]


@plane_test
async def test_a_container_bigger_than_the_floor_gets_a_worker_its_size(p):
    p.call(p.function("big", cpu=3.5, memory_mb=4096, gpu="A100:2"))
    await p.step()
    [spec] = p.cluster.specs.values()
    assert spec.shape == Shape(4, 4096, "A100", 2)
    token = p.sched.identity.tokens[spec.token_id]
    assert (token.role, token.max_cpu, token.max_memory_mb) == ("worker", 4, 4096)


@plane_test
async def test_never_more_than_max_workers(p):
    for name in "abcde":
        p.call(p.function(name, cpu=2))
    for _ in range(5):
        await p.step(1)
    assert len(p.cluster.specs) == 3


@plane_test
async def test_a_refused_shape_backs_off_doubling_while_others_go_on(p):
    p.call(p.function("f"))
    p.cluster.refuse = "Requested node configuration is not available"
    await p.step()
    assert len(p.prov.failures) == 1 and "Requested node configuration" in p.prov.failures[0].why
    await p.step(BACKOFF_FIRST / 2)
    assert len(p.prov.failures) == 1  # not asked again yet
    await p.step(BACKOFF_FIRST)
    assert len(p.prov.failures) == 2
    await p.step(BACKOFF_FIRST * 1.5)
    assert len(p.prov.failures) == 2  # the delay doubled to 4 s
    # Another shape is asked for meanwhile, and once one connects its shape's backoff is over.
    p.cluster.refuse = ""
    p.call(p.function("g", cpu=3))
    await p.step(0.1)
    [(job_id, spec)] = p.cluster.specs.items()
    assert spec.shape.cpu == 3
    p.connect(job_id)
    await p.step(BACKOFF_FIRST * 2)
    assert len(p.cluster.specs) == 2  # f's shape tried again, and accepted


@plane_test
async def test_an_idle_worker_is_told_to_exit_and_its_token_revoked_when_its_job_ends(p):
    fn = p.function("f")
    p.call(fn)
    await p.step()
    [(job_id, spec)] = p.cluster.specs.items()
    await p.step(0.1)  # the next pass sees it pending
    assert p.prov.not_connected() == [(spec.name, spec.shape, "fake job 1: pending (Resources)")]
    w = p.connect(job_id)
    assert w.containers  # the waiting input's container went to it
    await p.step(1)
    assert p.prov.describe(spec.name) == "fake job 1"
    p.sched.stop_app(p.app_id)  # its calls end, its containers stop and exit
    for c in list(w.containers.values()):
        p.sched.fleet.container_exited(api_pb2.ContainerExited(container_id=c.container_id), w)
    assert not w.containers
    await p.step(1)
    await p.step(59)
    assert not any(cmd.HasField("shutdown") for cmd in p.sent[spec.name])
    await p.step(1.5)
    assert any(cmd.HasField("shutdown") for cmd in p.sent[spec.name])
    assert p.sched.identity.tokens[spec.token_id].revoked_at is None
    del p.cluster.queue[job_id]  # it exited: its job ended
    await p.step(1)
    assert p.sched.identity.tokens[spec.token_id].revoked_at is not None
    assert p.prov.jobs == {} and not p.prov.failures


@plane_test
async def test_a_worker_that_never_connects_is_cancelled_after_the_start_timeout(p):
    p.call(p.function("f"))
    await p.step()
    await p.step(599)
    assert p.cluster.cancelled == []
    await p.step(2)
    assert p.cluster.cancelled == ["1"]
    assert "did not start a worker within 600s (pending: Resources)" in p.prov.failures[0].why
    await p.step(BACKOFF_FIRST + 1)  # the cancelled job ended: reported once, and the next asked for
    assert len(p.prov.failures) == 1 and len(p.cluster.specs) == 2
