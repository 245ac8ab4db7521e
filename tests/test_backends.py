"""The runtime backends: the same checks against every backend that can run here.

Each check runs once per backend, on a real control plane and a worker that runs that backend;
a backend that cannot run on this machine is skipped, with the reason it gives.
"""

import re

import pytest
from conftest import module_cluster

import ember
from ember import exception
from ember.proto import api_pb2
from ember.worker import backend
from ember.worker.main import BACKENDS


def _param(b):
    why = b.available()
    return pytest.param(b, id=b.name, marks=pytest.mark.skipif(why is not None, reason=f"{b.name} backend: {why}"))


@pytest.fixture(scope="module", params=[_param(b) for b in BACKENDS])
def running(request, tmp_path_factory):
    """A control plane and one worker that runs the backend, for the module's tests of it."""
    with module_cluster(tmp_path_factory.mktemp(request.param.name), backend=request.param.name):
        yield request.param


@pytest.mark.parametrize("b", BACKENDS, ids=lambda b: b.name)
def test_capabilities_are_declared_and_consistent(b):
    assert issubclass(b, backend.RuntimeBackend)
    assert api_pb2.Backend.Value(f"BACKEND_{b.name.upper()}")  # what the worker registers as
    caps = b.capabilities
    assert isinstance(caps, backend.Capabilities)
    assert "host" in caps.network_modes and caps.network_modes <= set(backend.NETWORK_MODES)
    if not caps.isolation:
        # Volumes, a network of its own and a root filesystem of its own all need a container's
        # own mount or network namespace.
        assert not caps.volumes and "none" not in caps.network_modes and not caps.root_filesystem_steps
    why = b.available()
    assert why is None or (isinstance(why, str) and why)


def test_a_function_runs_and_its_container_exit_is_reported(running):
    app = ember.App("backend-exit")

    @app.function(serialized=True)
    def square(x):
        return x * x

    @app.function(serialized=True)
    def crash():
        import os
        os._exit(7)

    with app.run():
        assert square.remote(7) == 49
        with pytest.raises(exception.ContainerExitedError, match="exited with code 7"):
            crash.remote()


def test_a_container_that_cannot_start_reports_its_exit_code_and_log_tail(running):
    """Python itself fails in the container (PYTHONHOME points nowhere), before Ember's runtime
    takes over its output: the caller learns the exit code and what the container printed."""
    app = ember.App("backend-no-start")

    @app.function(image=ember.Image.debian_slim().env({"PYTHONHOME": "/nowhere"}), serialized=True)
    def never():
        return "unreachable"

    tail = r"(?s)exited with code 1; its last output:.*Fatal Python error"
    with app.run(), pytest.raises(exception.InitError, match=tail):
        never.remote()


def test_the_worker_refuses_what_its_backend_lacks(running):
    caps = running.capabilities
    if (caps.volumes and "none" in caps.network_modes and caps.root_filesystem_steps and caps.disk_limit
            and caps.own_network):
        pytest.skip(f"the {running.name} backend lacks nothing")
    _, why = backend.choose(running.name, BACKENDS)  # as the worker chose it
    fix = re.escape(f"the container backend, and this worker runs the {running.name} backend ({why}): "
                    "run the worker as root on Linux")
    app = ember.App("backend-refusals")
    vol = ember.Volume.from_name("backend-refusals", create_if_missing=True)

    @app.function(volumes={"/data": vol}, serialized=True)
    def with_volume():
        return "unreachable"

    @app.function(block_network=True, serialized=True)
    def offline():
        return "unreachable"

    @app.function(ephemeral_disk=512, serialized=True)
    def with_disk_limit():
        return "unreachable"

    with app.run():
        if not caps.volumes:
            with pytest.raises(exception.InitError, match="volumes need " + fix):
                with_volume.remote()
        if "none" not in caps.network_modes:
            with pytest.raises(exception.InitError, match=r"block_network=True needs " + fix):
                offline.remote()
        if not caps.disk_limit:
            with pytest.raises(exception.InitError, match=re.escape("ephemeral_disk= (a limit on the container's "
                                                                    "disk) needs ") + fix):
                with_disk_limit.remote()
        if not caps.own_network:
            sb = ember.Sandbox.create(app=app, timeout=60, cidr_allowlist=["10.0.0.0/8"])
            with pytest.raises(exception.SandboxTerminatedError, match=re.escape(
                    "cidr_allowlist= (a network of its own, with only those networks) needs ") + fix):
                sb.wait()
    if not caps.root_filesystem_steps:
        app = ember.App("backend-refusals-steps")

        @app.function(image=ember.Image.debian_slim().run_commands("true"), serialized=True)
        def with_commands():
            return "unreachable"

        with pytest.raises(exception.ImageBuildError, match=re.escape("run_commands('true') needs ") + fix), app.run():
            with_commands.remote()


# ---- the choice of backend, and refusals, with stand-in backends whose availability the test sets


def _stand_in(name: str, why: str | None, isolation: bool) -> type[backend.RuntimeBackend]:
    caps = backend.Capabilities(isolation=isolation, volumes=isolation, gpus=True, root_filesystem_steps=isolation,
                                network_modes=frozenset(backend.NETWORK_MODES if isolation else ("host",)))
    return type(name, (backend.RuntimeBackend,), {"name": name, "capabilities": caps,
                                                  "available": staticmethod(lambda: why)})


BOX, PLAIN = _stand_in("box", None, True), _stand_in("plain", None, False)
UNROOTED = _stand_in("box", "not running as root", True)


def test_auto_chooses_the_first_available_backend_and_says_why_it_lacks_isolation():
    assert backend.choose("auto", [BOX, PLAIN]) == (BOX, "")
    assert backend.choose("auto", [UNROOTED, PLAIN]) == (PLAIN, "not running as root")
    assert backend.choose("auto", BACKENDS)[0] is next(b for b in BACKENDS if b.available() is None)
    with pytest.raises(backend.Unavailable, match="no runtime backend can run here: the box backend: not running "
                                                  "as root; the plain backend: not POSIX"):
        backend.choose("auto", [UNROOTED, _stand_in("plain", "not POSIX", False)])


def test_a_backend_asked_for_by_name_runs_or_the_worker_says_why_not():
    assert backend.choose("plain", [BOX, PLAIN]) == (PLAIN, "--backend plain was asked for")
    assert backend.choose("plain", [UNROOTED, PLAIN]) == (PLAIN, "not running as root")
    with pytest.raises(backend.Unavailable, match="the box backend is not available here: not running as root"):
        backend.choose("box", [UNROOTED, PLAIN])
    with pytest.raises(backend.Unavailable, match=r"there is no 'gvisor' backend \(there are: box, plain\)"):
        backend.choose("gvisor", [UNROOTED, PLAIN])


def test_refusals_follow_the_declared_capabilities():
    image = ember.Image.debian_slim().pip_install("six").add_local_python_source("conftest")._resolve(lambda d: "")
    assert backend.refusal(PLAIN, "not root", image) is None  # a Python environment holds all of it
    start = api_pb2.StartContainer(image=image)
    start.volumes.add(path="/data")
    assert backend.refusal(PLAIN, "not root", image, start) == (
        "volumes need the container backend, and this worker runs the plain backend (not root): "
        "run the worker as root on Linux")
    assert backend.refusal(BOX, "", image, start) is None
