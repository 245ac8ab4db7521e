"""Deployed apps: callable by name from any process after `ember deploy` exits, replaced by a
new version without failed calls, listed, followed, stopped, and kept across restarts."""

import subprocess
import sys
import textwrap

import pytest

import ember
from ember import exception
from conftest import ROOT, on_both_stores, wait_for

APP = '''
import os, time
import ember

app = ember.App("greeter")
VERSION = "{version}"

@app.function()
def greet(name, gate=None):
    print(f"greeting {{name}} from {{VERSION}}", flush=True)
    if gate:
        open(gate + ".started", "w").close()
        while not os.path.exists(gate):
            time.sleep(0.01)
    return f"{{VERSION}}: hello {{name}}"

@app.function()
def count(n):
    for i in range(n):
        yield i

@app.cls()
class Greeter:
    greeting: str = ember.parameter(default="hello")

    @ember.method()
    def greet(self, name):
        return f"{{VERSION}}: {{self.greeting}} {{name}}"
'''


def write_app(tmp_path, version):
    path = tmp_path / f"greeter_{version}.py"
    path.write_text(textwrap.dedent(APP.format(version=version)))
    return path


def ember_cli(*args):
    return subprocess.run([sys.executable, "-m", "ember.cli.main", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@on_both_stores()
def test_deploy_call_by_name_redeploy_and_stop(cluster, tmp_path):
    out = ember_cli("deploy", str(write_app(tmp_path, "v1")), "--name", "greeter")
    assert out.returncode == 0, out.stderr
    assert "version 1" in out.stdout
    # The deploying process is gone; any process calls the functions by name.
    greet = ember.Function.from_name("greeter", "greet")
    assert greet.remote("ada") == "v1: hello ada"
    assert list(ember.Function.from_name("greeter", "count").remote_gen(3)) == [0, 1, 2]
    greeter = ember.Cls.from_name("greeter", "Greeter")
    assert greeter().greet.remote("x") == "v1: hello x" and greeter(greeting="hi").greet.remote("y") == "v1: hi y"
    with pytest.raises(exception.NotFoundError, match="no function 'nope'; it has: Greeter, count, greet"):
        ember.Function.from_name("greeter", "nope").remote()
    with pytest.raises(exception.NotFoundError, match="no deployed app named 'other'.*greeter"):
        ember.Function.from_name("other", "greet").remote()

    # A call in flight on v1 while v2 is deployed: it finishes on v1; new calls go to v2.
    gate = str(tmp_path / "gate")
    in_flight = greet.spawn("bob", gate)
    wait_for(lambda: (tmp_path / "gate.started").exists(), what="the v1 call to start")
    out = ember_cli("deploy", str(write_app(tmp_path, "v2")), "--name", "greeter")
    assert out.returncode == 0 and "version 2" in out.stdout, out.stderr
    assert greet.remote("cy") == "v2: hello cy"  # the same handle: its app's current version
    assert ember.Function.from_name("greeter", "greet").remote("di") == "v2: hello di"
    (tmp_path / "gate").touch()
    assert in_flight.get(timeout=60) == "v1: hello bob"
    def history():
        return ember_cli("app", "history", "greeter").stdout.splitlines()

    wait_for(lambda: "stopped" in history()[1], what="v1 to stop once its call is done")
    assert history()[0].startswith("v2\t") and "running" in history()[0] and history()[1].startswith("v1\t")

    listing = ember_cli("app", "list").stdout
    assert "greeter" in listing and "deployed v2" in listing
    logs = ember_cli("app", "logs", "greeter").stdout
    assert "greeting cy from v2" in logs and "greeting di from v2" in logs

    assert ember_cli("app", "stop", "greeter").returncode == 0
    with pytest.raises(exception.NotFoundError, match="no deployed app named 'greeter'"):
        ember.Function.from_name("greeter", "greet").remote("x")
    again = ember_cli("app", "stop", "greeter")
    assert again.returncode == 1 and "no deployed app named 'greeter'" in again.stderr


@on_both_stores()
def test_a_deployed_app_survives_a_control_plane_restart(cluster, tmp_path):
    assert ember_cli("deploy", str(write_app(tmp_path, "v1")), "--name", "keeper").returncode == 0
    assert ember.Function.from_name("keeper", "greet").remote("a") == "v1: hello a"
    cluster.kill_server()
    cluster.start_server()
    assert ember.Function.from_name("keeper", "greet").remote("b") == "v1: hello b"


def test_deploy_needs_a_server_that_keeps_running(tmp_path, monkeypatch):
    monkeypatch.delenv("EMBER_SERVER_URL", raising=False)
    out = ember_cli("deploy", str(write_app(tmp_path, "v1")))
    assert out.returncode == 1 and "EMBER_SERVER_URL" in out.stderr
