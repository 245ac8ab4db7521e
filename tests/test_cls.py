"""Classes: enter once per container, methods by .remote/.map/.spawn/.remote_gen, parameters
with containers of their own, exit when the container stops, enter failures as they are."""

import pytest

import ember
from ember import exception
from conftest import wait_for

import cls_app


@pytest.fixture
def running(cluster):
    with cls_app.app.run():
        yield cluster


def test_enter_runs_once_and_methods_share_its_state(running):
    model = cls_app.Model()
    assert model.predict.remote(3) == 3
    assert list(model.predict.map([1, 2, 3])) == [1, 2, 3]
    assert model.predict.spawn(5).get(timeout=60) == 5
    assert list(model.count.remote_gen(3)) == [0, 1, 2]
    infos = [model.info.remote() for _ in range(3)]
    assert {i["entered"] for i in infos} == {1} and len({i["pid"] for i in infos}) == 1
    assert model.size == "small" and model.predict.local(2) == 2


def test_parameters_make_instances_with_containers_of_their_own(running):
    small, large = cls_app.Model(), cls_app.Model(size="large")
    assert large.predict.remote(3) == 30 and small.predict.remote(3) == 3
    assert large.info.remote()["pid"] != small.info.remote()["pid"]
    assert cls_app.Model(size="large") is large  # the same parameters, the same instance
    with pytest.raises(exception.InvalidError, match="no parameter colour"):
        cls_app.Model(colour="red")
    with pytest.raises(exception.InvalidError, match="str, int, bool or bytes"):
        cls_app.Model(size=[1])
    with pytest.raises(AttributeError, match="no method 'train'"):
        _ = cls_app.Model().train


def test_exit_runs_when_the_container_stops(cluster, tmp_path):
    marker = tmp_path / "closed"
    with cls_app.app.run():
        assert cls_app.Model(marker=str(marker)).predict.remote(1) == 1
    # The app stopped: its containers were asked to stop, and ran their exit hooks.
    # (The hook opens the file, then writes: wait for what it writes, not for the file.)
    wait_for(lambda: marker.exists() and marker.read_text(), what="the exit hook")
    assert marker.read_text() == "closed small"


def test_an_exception_in_enter_fails_the_calls_with_it(running):
    with pytest.raises(cls_app.LoadError, match="the weights are missing") as info:
        cls_app.Broken().predict.remote(1)
    assert "in load" in "".join(getattr(info.value, "__notes__", []))


def test_app_cls_checks_its_class():
    app = ember.App("x")
    with pytest.raises(exception.InvalidError, match="no method marked"):
        @app.cls()
        class Empty:
            pass
    with pytest.raises(exception.InvalidError, match="decorates classes"):
        app.cls()(lambda: 1)
