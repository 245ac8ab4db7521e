"""Nothing lost, whatever fails: an input whose retries are spent is kept (a dead letter), listed
and run again; a worker whose containers keep failing is cordoned, and tried again later."""

import json
import os
import re
import subprocess
import sys

import pytest

import ember
from ember import exception
from conftest import Cluster, wait_for

import dead_app


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ember.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, **(env or {})))


def failures(app: str, env=None) -> list[dict]:
    out = cli("app", "failures", app, "--json", env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_failed_input_is_kept_listed_and_run_again(cluster, tmp_path):
    marker = tmp_path / "marker"
    with dead_app.app.run():
        with pytest.raises(ValueError, match="no marker"):
            dead_app.flaky.remote(str(marker))
        app_id = dead_app.app.app_id
        [f] = failures(app_id)
        assert (f["function"], f["input"], f["attempts"], f["status"]) == ("flaky", 0, 2, "failure")
        assert "no marker" in f["error"]
        # Every attempt: its error and traceback, and where it ran.
        assert [a["attempt"] for a in f["history"]] == [1, 2]
        for a in f["history"]:
            assert "no marker" in a["error"] and 'raise ValueError(f"no marker' in a["traceback"]
            assert a["worker"] == "w1" and a["container_id"].startswith("ct-")
        call_id = f["call_id"]
        # By the app's name too, as a table.
        table = cli("app", "failures", "dead-letters")
        assert re.search(rf"^{call_id}\t0\tflaky\t2\t.*no marker", table.stdout, re.MULTILINE), table.stdout

        # Another workspace sees none of it: the same answers as for what does not exist.
        assert cli("workspace", "create", "other").returncode == 0
        token = json.loads(cli("token", "new", "--workspace", "other", "--json").stdout)
        other = {"EMBER_TOKEN_ID": token["token_id"], "EMBER_TOKEN_SECRET": token["token_secret"]}
        theirs, missing = cli("call", "retry", call_id, env=other), cli("call", "retry", "fc-missing", env=other)
        assert theirs.returncode == missing.returncode == 1
        assert "there is no function call" in theirs.stderr
        assert theirs.stderr == missing.stderr.replace("fc-missing", call_id)
        out = cli("app", "failures", app_id, env=other)
        assert out.returncode == 1 and f"there is no app {app_id!r}" in out.stderr

        # Retried while it still fails: one more attempt, numbered after the others, and kept.
        out = cli("call", "retry", call_id)
        assert out.returncode == 1 and "input 0 failed again: ValueError: no marker" in out.stdout, out.stderr
        [f] = failures(app_id)
        assert f["attempts"] == 3 and [a["attempt"] for a in f["history"]] == [1, 2, 3]

        # Fixed, and retried: its result, from the command and by the call's id.
        marker.touch()
        out = cli("call", "retry", call_id, "--input", "0")
        assert out.returncode == 0 and "input 0: 'ok at last'" in out.stdout, out.stderr
        assert ember.FunctionCall.from_id(call_id).get(timeout=60) == "ok at last"
        assert failures(app_id) == []
        # What did not fail is not run again.
        out = cli("call", "retry", call_id)
        assert out.returncode == 1 and "has no failed input to retry" in out.stderr


def test_a_retry_runs_on_the_current_version_of_a_deployed_app(cluster, tmp_path):
    src = tmp_path / "versioned.py"
    code = ("import ember\napp = ember.App('versioned')\n\n@app.function()\n"
            "def answer(x):\n    {body}\n")
    src.write_text(code.format(body="raise RuntimeError('v1 is broken')"))
    assert cli("deploy", str(src)).returncode == 0
    fn = ember.Function.from_name("versioned", "answer")
    with pytest.raises(RuntimeError, match="v1 is broken"):
        fn.remote(6)
    [f] = failures("versioned")
    src.write_text(code.format(body="return 7 * x"))
    out = cli("deploy", str(src))
    assert out.returncode == 0 and "version 2" in out.stdout, out.stderr
    out = cli("call", "retry", f["call_id"])
    assert out.returncode == 0 and "input 0: 42" in out.stdout, out.stderr
    assert ember.FunctionCall.from_id(f["call_id"]).get(timeout=60) == 42
    assert failures("versioned") == []


def worker_line(name: str, env) -> str:
    out = cli("worker", "list", env=env)
    assert out.returncode == 0, out.stderr
    return next((line for line in out.stdout.splitlines() if line.startswith(f"{name}\t")), "")


def test_a_worker_whose_containers_keep_dying_is_cordoned_then_tried_again(tmp_path, monkeypatch):
    c = Cluster(tmp_path)
    c.start_server(["--cordon-after", "3", "--cordon-window", "2m", "--cordon-cooldown", "15s"])
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    try:
        # The bad worker offers more CPU: placement prefers it while it is open.
        c.start_worker("bad", cpu=8, env={"EMBER_TEST_BAD_WORKER": "1"})
        c.start_worker("good", cpu=2)
        wait_for(lambda: all("\tconnected" in worker_line(n, c.env) for n in ("bad", "good")), what="both workers")
        with dead_app.app.run():
            assert sorted(dead_app.double.map(range(6))) == [0, 2, 4, 6, 8, 10]
            assert "for double on worker good" in c.log()  # where its inputs went once bad was cordoned
            line = worker_line("bad", c.env)
            assert "cordoned until" in line and "3 containers failed within 120s" in line, line
            assert "killed by SIGKILL" in line, line
            assert "cordoned" not in worker_line("good", c.env)
            assert "worker bad is cordoned for 15s" in c.log()
            # Cordoned: a new function's container goes to the other worker.
            assert dead_app.which_worker.remote() == "good"
            # After its cooldown it takes work again (most free CPU: its containers come first).
            wait_for(lambda: "worker bad is tried again" in c.log(), timeout=60, what="the cooldown to end")
            assert "cordoned" not in worker_line("bad", c.env)
        with dead_app.app.run():  # a new run: its functions need new containers
            assert dead_app.which_worker.remote() == "bad"
        failed = c.log().count("while running input")
        print(f"containers that died on the bad worker before it was cordoned: {failed}")
    finally:
        c.stop()


def test_the_last_open_worker_is_not_cordoned_and_a_crash_is_a_dead_letter(tmp_path, monkeypatch):
    c = Cluster(tmp_path)
    c.start_server(["--cordon-after", "2"])
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    try:
        c.start_worker("only")
        with dead_app.app.run():
            with pytest.raises(exception.ContainerExitedError, match="killed by SIGKILL"):
                dead_app.crash.remote()
            # Its containers died on its worker's account, but no other worker could take the work.
            assert "no other worker can take its work: not cordoned" in c.log()
            assert "cordoned" not in worker_line("only", c.env)
            assert dead_app.which_worker.remote() == "good"
            [f] = failures(dead_app.app.app_id)
            assert (f["function"], f["attempts"], f["status"]) == ("crash", 3, "container_exited")
            assert [a["attempt"] for a in f["history"]] == [1, 2, 3]
            assert all("killed by SIGKILL" in a["error"] and a["worker"] == "only" for a in f["history"])
            assert len({a["container_id"] for a in f["history"]}) == 3  # a new container each time
    finally:
        c.stop()
