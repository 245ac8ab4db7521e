"""The dispatch state machine, without processes: the control plane's own parts on a real
SQLite store, driven by hand. What the control plane sends a worker or a container (on its
gRPC stream, in a cluster) is appended to a list; time is a clock that the test moves, and a
retry's backoff is a timer that the test fires."""

import asyncio
import pickle

from conftest import scenario_test

from ember.proto import api_pb2
from ember.server.gateway import WebRequest
from ember.server.ledger import web_input
from ember.server.retries import MAX_LOST
from ember.server.scheduler import Scheduler
from ember.server.store import open_store

Output = api_pb2.Output
Exited = api_pb2.ContainerExited
LEASE = 3.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Plane:
    """A control plane's parts with one app and one connected worker."""

    def __init__(self, tmp_path):
        self.clock = Clock()
        self.timers = []  # (delay, callback): retries waiting for their backoff
        self.store = open_store(tmp_path / "ember.db")
        # Its worker never goes silent (in a cluster it heartbeats): only its containers lose leases.
        self.sched = Scheduler(self.store, lease_timeout=LEASE, worker_timeout=600, app_timeout=600,
                               output_retention=3600, clock=self.clock,
                               later=lambda delay, callback: self.timers.append((delay, callback)))
        self.ledger, self.dispatch, self.fleet = self.sched.ledger, self.sched.dispatch, self.sched.fleet
        self.to_worker: list[api_pb2.WorkerCommand] = []
        self.worker = self.fleet.worker_connected(api_pb2.WorkerRegister(
            worker_id="w1", boot_id="b1", name="w1", cpu=8, memory_mb=8192), self.to_worker.append, "tk-w1")
        self.app_id = self.sched.apps.create_app("main", "test")

    def function(self, **definition):
        definition.setdefault("resources", api_pb2.Resources(cpu=1, memory_mb=128))
        d = api_pb2.FunctionDefinition(name="f", **definition)
        return self.sched.apps.function(self.sched.apps.create_function(self.app_id, d))

    def call(self, fn, n=1, call_id="fc-1"):
        inputs = [api_pb2.Input(idx=i, args=api_pb2.Payload(data=pickle.dumps(i))) for i in range(n)]
        return self.ledger.create_call("main", fn.function_id, call_id, inputs, True, maybe_exists=False)

    def started(self) -> list[str]:
        """The containers the worker was asked to start, in order."""
        return [cmd.start_container.container_id for cmd in self.to_worker if cmd.HasField("start_container")]

    def connect(self, container_id: str, want: int = 0):
        """The container says hello (and asks for `want` inputs); returns it and what it is sent."""
        sent: list[api_pb2.ContainerCommand] = []
        c = self.fleet.container_connected(api_pb2.ContainerHello(container_id=container_id), sent.append)
        if want:
            self.dispatch.container_wants(c, want)
        return c, sent

    def output(self, c, input_id: str, status=Output.SUCCESS, want=0):
        out = Output(input_id=input_id, idx=int(input_id.rpartition(":")[2]), status=status,
                     data=api_pb2.Payload(data=pickle.dumps("result")))
        self.dispatch.container_outputs(c, api_pb2.OutputBatch(outputs=[out], want_inputs=want), 0)

    async def outputs(self, call_id: str = "fc-1") -> list[api_pb2.Output]:
        """The call's outputs, as committed to the store."""
        await self.store.durable()
        return [co.output for co in self.store.outputs(call_id, 0, 100)]

    async def open_inputs(self, call_id: str = "fc-1") -> dict[str, tuple]:
        """input id -> (attempts, times lost, holding container), as committed to the store."""
        await self.store.durable()
        return {i: (attempts, lost, cid) for i, _, _, attempts, lost, cid, _ in self.store.open_inputs(call_id)}


def plane_test(scenario):
    return scenario_test(Plane, scenario)


def inputs_sent(sent: list[api_pb2.ContainerCommand]) -> list[tuple[str, int]]:
    return [(i.input_id, i.attempt) for cmd in sent if cmd.HasField("inputs") for i in cmd.inputs.inputs]


@plane_test
async def test_an_input_is_leased_to_a_container_that_wants_work(p):
    fn = p.function()
    call = p.call(fn)
    woken = []
    p.ledger.when_done(call, woken.append)
    (first,) = p.started()  # nothing could take the input: a container was asked for
    assert p.sched.placement.start_container(fn)
    second = p.started()[1]
    _, idle_sent = p.connect(first)
    busy, busy_sent = p.connect(second, want=1)
    assert inputs_sent(busy_sent) == [("fc-1:0", 1)] and idle_sent == []
    # Who holds it rides along with the call's own write (attempts are written on a requeue).
    assert await p.open_inputs() == {"fc-1:0": (0, 0, second)}
    p.output(busy, "fc-1:0")
    assert [o.status for o in await p.outputs()] == [Output.SUCCESS]
    assert await p.open_inputs() == {}
    assert woken == [call] and call.done()


@plane_test
async def test_a_lost_lease_requeues_without_charging_an_attempt_until_max_lost(p):
    fn = p.function(retries=api_pb2.RetryPolicy(max_retries=0))
    p.call(fn)
    for lost in range(1, MAX_LOST + 2):
        c, sent = p.connect(p.started()[-1], want=1)
        assert inputs_sent(sent) == [("fc-1:0", 1)]  # each time its first attempt
        p.fleet.container_disconnected(c, sent.append)
        p.clock.now += LEASE / 2
        p.sched.tick()
        assert (await p.open_inputs())["fc-1:0"][:2] == (0, lost - 1)  # its lease still holds
        assert len(p.started()) == lost
        p.clock.now += LEASE
        p.sched.tick()
        if lost <= MAX_LOST:
            assert (await p.open_inputs())["fc-1:0"][:2] == (0, lost)
            assert len(p.started()) == lost + 1  # back in the queue, which asked for a container
    (out,) = await p.outputs()
    assert out.status == Output.CONTAINER_EXITED and f"lost {MAX_LOST + 1} times" in out.error
    assert await p.open_inputs() == {}


@plane_test
async def test_a_reconnecting_container_s_outputs_come_before_its_inputs_are_requeued(p):
    fn = p.function()
    p.call(fn, n=2)
    c, sent = p.connect(p.started()[0], want=2)
    assert [i for i, _ in inputs_sent(sent)] == ["fc-1:0", "fc-1:1"]
    p.fleet.container_disconnected(c, sent.append)
    # It finished fc-1:0 while disconnected, and lost fc-1:1 (say): its hello names neither,
    # and one batch it sends again follows.
    again = []
    p.fleet.container_connected(api_pb2.ContainerHello(container_id=c.container_id, resending=1), again.append)
    assert set(c.held) == {"fc-1:0", "fc-1:1"}  # nothing requeued before its outputs are in
    p.output(c, "fc-1:0")
    assert [o.input_id for o in await p.outputs()] == ["fc-1:0"]
    assert list(c.held) == [] and [i.input_id for i in fn.pending] == ["fc-1:1"]
    assert (await p.open_inputs())["fc-1:1"][:2] == (0, 1)  # requeued as lost, its attempt not charged


@plane_test
async def test_closed_connections_return_inputs_at_once(p):
    fn = p.function()
    p.call(fn)
    c, sent = p.connect(p.started()[0], want=1)
    p.fleet.worker_disconnected(p.worker)
    assert list(c.held) == ["fc-1:0"]  # its own connection is open: it keeps its lease
    p.fleet.container_disconnected(c, sent.append)
    # Both closed, no time passed: nobody will report its end, so its input is back in the queue.
    assert list(c.held) == [] and [i.input_id for i in fn.pending] == ["fc-1:0"]
    assert (await p.open_inputs())["fc-1:0"][:2] == (0, 1)


@plane_test
async def test_a_failed_output_is_retried_with_backoff_then_fails(p):
    fn = p.function(retries=api_pb2.RetryPolicy(max_retries=2, initial_delay=1.0, backoff_coefficient=3.0,
                                                max_delay=60.0))
    p.call(fn)
    c, sent = p.connect(p.started()[0], want=10)
    for attempt, backoff in [(1, 1.0), (2, 3.0)]:
        assert inputs_sent(sent)[-1] == ("fc-1:0", attempt)
        p.output(c, "fc-1:0", Output.FAILURE)
        assert await p.outputs() == [] and not c.held  # it waits out its backoff, held by nobody
        [(delay, run_again)] = p.timers
        p.timers.clear()
        assert delay == backoff
        assert (await p.open_inputs())["fc-1:0"][:2] == (attempt, 0)
        run_again()
    assert inputs_sent(sent)[-1] == ("fc-1:0", 3)
    p.output(c, "fc-1:0", Output.FAILURE)
    assert p.timers == []
    assert [o.status for o in await p.outputs()] == [Output.FAILURE]
    assert await p.open_inputs() == {}


@plane_test
async def test_cancel_ends_queued_inputs_and_tells_the_container_running_one(p):
    fn = p.function()
    call = p.call(fn, n=3)
    c, sent = p.connect(p.started()[0], want=1)
    assert inputs_sent(sent) == [("fc-1:0", 1)]
    p.ledger.cancel_call("main", call.call_id)
    assert sent[-1] == api_pb2.ContainerCommand(cancel_input_id="fc-1:0")
    outs = await p.outputs()
    assert [(o.input_id, o.status) for o in outs] == [(f"fc-1:{i}", Output.CANCELLED) for i in range(3)]
    assert await p.open_inputs() == {} and call.done()
    p.output(c, "fc-1:0", Output.CANCELLED, want=1)  # the container's own answer comes too late
    assert len(await p.outputs()) == 3 and inputs_sent(sent) == [("fc-1:0", 1)]


@plane_test
async def test_a_web_request_is_dispatched_unstored_and_not_retried(p):
    fn = p.function(web=api_pb2.WebEndpoint(kind=api_pb2.WebEndpoint.FASTAPI),
                    retries=api_pb2.RetryPolicy(max_retries=3))
    web = WebRequest(api_pb2.Input(http=api_pb2.HttpRequest(type="http", method="GET", path="/")))
    inp = web_input(web)
    p.dispatch.submit(fn, [inp], soon=True)
    assert p.started() == []  # requests that arrive together are dispatched together, next
    await asyncio.sleep(0)
    (cid,) = p.started()
    _, sent = p.connect(cid, want=1)
    (batch,) = [cmd.inputs.inputs for cmd in sent]
    assert [(i.input_id, i.http.path) for i in batch] == [(inp.input_id, "/")]
    await p.store.durable()
    assert p.store.open_calls() == [] and p.store.call(inp.input_id) is None
    p.fleet.container_exited(Exited(container_id=cid, cause=Exited.EXITED, reason="exited with code 1"), p.worker)
    assert web.final.status == Output.CONTAINER_EXITED and inp.done
    assert p.timers == [] and p.started() == [cid]  # not retried: no new container for it
    await p.store.durable()
    assert p.store.open_calls() == [] and p.store.outputs(inp.input_id, 0, 10) == []


@plane_test
async def test_a_container_out_of_memory_fails_its_input_as_out_of_memory(p):
    fn = p.function()
    p.call(fn)
    (cid,) = p.started()
    p.connect(cid, want=1)
    p.fleet.container_exited(Exited(container_id=cid, cause=Exited.OUT_OF_MEMORY, reason="ran out of memory"),
                             p.worker)
    (out,) = await p.outputs()
    assert out.status == Output.OUT_OF_MEMORY and "ran out of memory while running this input" in out.error
    assert await p.open_inputs() == {}


@plane_test
async def test_a_container_that_cannot_start_fails_the_queued_calls(p):
    fn = p.function(max_containers=1)  # its inputs go to one container (what is tested is not scaling)
    p.call(fn, n=2)
    (cid,) = p.started()
    p.fleet.container_exited(Exited(container_id=cid, cause=Exited.START_FAILED,
                                    reason="could not set up its image"), p.worker)
    outs = await p.outputs()
    assert [o.status for o in outs] == [Output.INIT_FAILURE] * 2
    assert "could not set up its image" in outs[0].error
    p.call(fn, call_id="fc-2")  # and so does the next call, without another container
    assert [o.status for o in await p.outputs("fc-2")] == [Output.INIT_FAILURE]
    assert p.started() == [cid]


@plane_test
async def test_a_build_waits_for_a_worker_to_connect(p):
    p.fleet.worker_disconnected(p.worker)
    image = api_pb2.Image(image_id="la-1", steps=[api_pb2.ImageStep(kind=api_pb2.ImageStep.DEBIAN_SLIM,
                                                                    layer_id="la-1")])
    events = p.sched.builds.follow(image, force=False, workspace="main")
    assert "waiting for a worker" in (await anext(events)).log
    to_w2 = []
    w2 = p.fleet.worker_connected(api_pb2.WorkerRegister(worker_id="w2", boot_id="b2", name="w2", cpu=8,
                                                         memory_mb=8192), to_w2.append, "tk-w2")
    for _ in range(10):  # the build's task wakes up and sends it, in a loop iteration or two
        if to_w2:
            break
        await asyncio.sleep(0)
    (cmd,) = to_w2
    p.sched.builds.on_done(api_pb2.BuildDone(build_id=cmd.build_image.build_id), p.worker)  # not its build
    p.sched.builds.on_done(api_pb2.BuildDone(build_id=cmd.build_image.build_id), w2)
    assert [e.done and not e.error async for e in events] == [True]


@plane_test
async def test_placement_counts_what_each_worker_s_containers_reserve(p):
    """Placement reads each worker's free room from sums kept as containers start, exit and come
    back with their worker: the room of one that exits is free again, and a worker's reconnect
    neither forgets nor doubles what its containers hold."""
    to_w2 = []
    w2 = p.fleet.worker_connected(api_pb2.WorkerRegister(worker_id="w2", boot_id="b2", name="w2", cpu=4,
                                                         memory_mb=8192), to_w2.append, "tk-w2")
    fn = p.function(resources=api_pb2.Resources(cpu=3, memory_mb=1000))
    place = p.sched.placement.start_container
    # The most free CPU first: w1 (8), w1 (5 > 4), w2 (4 > 2); then neither has 3 free.
    assert [place(fn) for _ in range(4)] == [True, True, True, False]
    assert len(p.started()) == 2 and len(to_w2) == 1
    assert p.worker.free() == (2, 8192 - 2000) and w2.free() == (1, 8192 - 1000)
    first = p.started()[0]
    p.fleet.container_exited(Exited(container_id=first, cause=Exited.EXITED, reason="exited with code 0"), p.worker)
    assert p.worker.free() == (5, 8192 - 1000)
    p.worker = p.fleet.worker_connected(api_pb2.WorkerRegister(
        worker_id="w1", boot_id="b1", name="w1", cpu=8, memory_mb=8192, running_container_ids=[p.started()[1]]),
        p.to_worker.append, "tk-w1")
    assert p.worker.free() == (5, 8192 - 1000)
    assert place(fn) and p.started()[-1] not in (first, p.started()[1]) and p.worker.free() == (2, 8192 - 2000)
    p.fleet.worker_connected(api_pb2.WorkerRegister(worker_id="w2", boot_id="b2-restarted", name="w2", cpu=4,
                                                    memory_mb=8192), to_w2.append, "tk-w2")
    assert p.fleet._workers["w2"].free() == (4, 8192)  # a restarted worker runs nothing of what it ran


@plane_test
async def test_a_batch_of_inputs_sent_again_does_not_run_the_finished_ones_again(p):
    """A client that did not hear PutInputs' answer sends the batch again: its inputs that have
    finished meanwhile are not added again (they would run twice, and count twice towards the
    call's end, which a map takes for all of its outputs having come)."""
    fn = p.function(max_containers=1)  # its inputs go to one container (what is tested is not scaling)
    first = [api_pb2.Input(idx=i, args=api_pb2.Payload(data=pickle.dumps(i))) for i in range(2)]
    call = p.ledger.create_call("main", fn.function_id, "fc-1", first, False, maybe_exists=False)
    (cid,) = p.started()
    c, sent = p.connect(cid, want=2)
    p.output(c, "fc-1:0")
    p.ledger.put_inputs("main", "fc-1", first, False)  # fc-1:1 is still open, fc-1:0 finished
    p.ledger.put_inputs("main", "fc-1", [api_pb2.Input(idx=2, args=api_pb2.Payload(data=pickle.dumps(2)))], True)
    p.output(c, "fc-1:1")
    p.dispatch.container_wants(c, 5)
    assert inputs_sent(sent) == [("fc-1:0", 1), ("fc-1:1", 1), ("fc-1:2", 1)]
    assert not call.done()
    p.output(c, "fc-1:2")
    assert call.done() and (call.num_done, call.num_inputs) == (3, 3)
    assert [o.idx for o in await p.outputs()] == [0, 1, 2]


@plane_test
async def test_a_batch_sent_again_to_a_restarted_control_plane_does_not_run_the_finished_ones_again(p):
    """The same after a restart (or a failover): the control plane that loads the call knows
    nothing of which inputs finished, but every index below the highest it loads, and not open,
    did. (Added again, they ran twice and ended a .map short: its client saw all outputs counted,
    some of them twice, and one missing.)"""
    fn = p.function(max_containers=1)  # its inputs go to one container (what is tested is not scaling)
    batch = [api_pb2.Input(idx=i, args=api_pb2.Payload(data=pickle.dumps(i))) for i in range(3)]
    p.ledger.create_call("main", fn.function_id, "fc-1", batch, False, maybe_exists=False)
    (cid,) = p.started()
    c, sent = p.connect(cid, want=3)
    p.output(c, "fc-1:0")
    p.output(c, "fc-1:2")
    await p.store.durable()
    # Another control plane on the same database: what it knows, it loads from there.
    sched = Scheduler(p.store, lease_timeout=LEASE, worker_timeout=600, app_timeout=600, output_retention=3600,
                      clock=p.clock, later=lambda delay, callback: None)
    sched.recover()
    to_worker = []
    sched.fleet.worker_connected(api_pb2.WorkerRegister(worker_id="w1", boot_id="b1", name="w1", cpu=8, memory_mb=8192,
                                                        running_container_ids=[cid]), to_worker.append, "tk-w1")
    sched.ledger.put_inputs("main", "fc-1", batch, True)  # the client did not hear the first answer
    call = sched.ledger.lookup_call("fc-1")
    assert sorted(call.inputs) == ["fc-1:1"] and (call.num_done, call.num_inputs) == (2, 3)
    sent = []
    c = sched.fleet.container_connected(api_pb2.ContainerHello(container_id=cid), sent.append)
    sched.dispatch.container_wants(c, 5)
    assert inputs_sent(sent) == [("fc-1:1", 1)]
    out = Output(input_id="fc-1:1", idx=1, status=Output.SUCCESS, data=api_pb2.Payload(data=pickle.dumps("r")))
    sched.dispatch.container_outputs(c, api_pb2.OutputBatch(outputs=[out]), 0)
    assert call.done()
    assert sorted(o.idx for o in await p.outputs()) == [0, 1, 2]


@plane_test
async def test_a_large_busy_function_s_backlog_is_weighed_between_ticks_at_most_so_often(p):
    """With a backlog, every output of a busy function leaves inputs queued, and weighing them
    walks all its containers: past WEIGH_AT_ONCE_UP_TO containers, dispatch has the autoscaler
    weigh them at most every WEIGH_EVERY seconds (its tick weighs them too). Each output still
    gets its container its next input."""
    from ember.server.autoscaler import WEIGH_AT_ONCE_UP_TO, WEIGH_EVERY
    n = WEIGH_AT_ONCE_UP_TO + 1
    p.worker.cpu, p.worker.memory_mb = 1000, 10**6
    fn = p.function()
    fn.exec_ewma = 1e-6  # its inputs are short, so far: its backlog asks for no more than one container
    p.call(fn, n=3 * n)
    while len(p.started()) < n:
        assert p.sched.placement.start_container(fn)
    busy = [p.connect(cid, want=1) for cid in p.started()]
    fn.exec_ewma = 60.0  # each input takes a minute: the backlog wants a container of its own each
    assert len(p.started()) == n  # (weighed as the first of them asked for inputs, before it ran any)
    p.clock.now += 2 * WEIGH_EVERY
    c, sent = busy[0]
    p.output(c, inputs_sent(sent)[0][0], want=1)
    started = len(p.started())
    assert len(inputs_sent(sent)) == 2 and started > n  # its next input, and containers for the rest
    p.call(fn, n=50, call_id="fc-2")  # more inputs at once after: not weighed again yet
    assert len(p.started()) == started
    p.clock.now += 2 * WEIGH_EVERY
    c, sent = busy[1]
    p.output(c, inputs_sent(sent)[0][0], want=1)
    assert len(inputs_sent(sent)) == 2 and len(p.started()) > started


@plane_test
async def test_a_call_s_inputs_complete_after_its_last_ones_finished_counts_them_all(p):
    """A map sends its inputs, then an empty batch that says they are complete. If the inputs of
    the highest indexes have finished by then, the call still has as many inputs as it was sent
    (counting only the open ones ended the call early, and the map with it, short of outputs)."""
    fn = p.function(max_containers=1)  # one container of its own accord; the test starts a second
    inputs = [api_pb2.Input(idx=i, args=api_pb2.Payload(data=pickle.dumps(i))) for i in range(3)]
    call = p.ledger.create_call("main", fn.function_id, "fc-1", inputs, False, maybe_exists=False)
    (cid,) = p.started()
    assert p.sched.placement.start_container(fn)
    c1, sent1 = p.connect(cid, want=1)
    c2, sent2 = p.connect(p.started()[1], want=2)
    assert inputs_sent(sent1) == [("fc-1:0", 1)] and inputs_sent(sent2) == [("fc-1:1", 1), ("fc-1:2", 1)]
    p.output(c2, "fc-1:2")
    p.output(c2, "fc-1:1")
    p.ledger.put_inputs("main", "fc-1", [], True)  # fc-1:0 alone is open
    assert call.num_inputs == 3 and not call.done()
    p.output(c1, "fc-1:0")
    assert call.done() and [o.idx for o in await p.outputs()] == [2, 1, 0]


@plane_test
async def test_a_map_closed_after_its_last_output_wakes_its_long_poll(p):
    fn = p.function()
    call = p.ledger.create_call("main", fn.function_id, "fc-1", [api_pb2.Input(
        idx=0, args=api_pb2.Payload(data=pickle.dumps(0)))], False, maybe_exists=False)  # a map being fed
    (first,) = p.started()
    c, sent = p.connect(first, want=1)
    p.output(c, "fc-1:0")
    poll = asyncio.ensure_future(p.ledger.read_outputs(call, 1, 100, timeout=30))  # waits past the last
    await asyncio.sleep(0)
    assert not poll.done()
    p.ledger.put_inputs("main", "fc-1", [], complete=True)  # no more inputs: the call is done
    await asyncio.wait_for(poll, 5)  # not at the poll's timeout
    assert call.done() and poll.result() == []


def held_call(p, fn, call_id="fc-1"):
    """A `.remote()`'s call, as CallStream makes it (held back: Ledger.create_call's hold)."""
    inp = api_pb2.Input(idx=0, args=api_pb2.Payload(data=pickle.dumps(0)))
    return p.ledger.create_call("main", fn.function_id, call_id, [inp], True, maybe_exists=False, hold=True)


@plane_test
async def test_a_remote_whose_output_comes_first_is_written_finished_without_input_rows(p):
    fn = p.function()
    call = held_call(p, fn)
    c, sent = p.connect(p.started()[0], want=1)
    assert inputs_sent(sent) == [("fc-1:0", 1)]  # dispatched at once
    await p.store.durable()
    assert p.store.call("fc-1") is None and await p.open_inputs() == {}  # nothing written yet
    p.output(c, "fc-1:0")
    assert call.done() and not call.held
    assert [o.status for o in await p.outputs()] == [Output.SUCCESS]
    num_inputs, num_done = p.store.call("fc-1")[1:3]
    assert (num_inputs, num_done) == (1, 1) and await p.open_inputs() == {}
    # Its timer finds it done: nothing more is written.
    for _, fire in p.timers:
        fire()
    assert await p.open_inputs() == {} and not call.held


@plane_test
async def test_a_remote_still_open_after_the_hold_is_written_with_its_holder(p):
    fn = p.function()
    call = held_call(p, fn)
    c, _ = p.connect(p.started()[0], want=1)
    ((delay, fire),) = p.timers
    assert delay > 0
    fire()  # HOLD seconds later, still running
    assert not call.held
    assert await p.open_inputs() == {"fc-1:0": (0, 0, c.container_id)}
    p.output(c, "fc-1:0")
    assert [o.status for o in await p.outputs()] == [Output.SUCCESS]
    assert await p.open_inputs() == {} and p.store.call("fc-1")[2] == 1


@plane_test
async def test_a_remote_retried_is_written_before_its_attempts(p):
    fn = p.function(retries=api_pb2.RetryPolicy(max_retries=1, initial_delay=1.0))
    call = held_call(p, fn)
    c, _ = p.connect(p.started()[0], want=1)
    p.output(c, "fc-1:0", status=Output.FAILURE)
    assert not call.held and not call.done()
    assert await p.open_inputs() == {"fc-1:0": (1, 0, None)}  # its failed attempt, queued again


@plane_test
async def test_a_remote_generator_is_written_at_its_first_item(p):
    fn = p.function(is_generator=True)
    call = held_call(p, fn)
    c, _ = p.connect(p.started()[0], want=1)
    p.output(c, "fc-1:0", status=Output.GENERATOR_ITEM)
    assert not call.held
    assert await p.open_inputs() == {"fc-1:0": (0, 0, c.container_id)}
    p.output(c, "fc-1:0")
    assert [o.status for o in await p.outputs()] == [Output.GENERATOR_ITEM, Output.SUCCESS]
    assert await p.open_inputs() == {}
