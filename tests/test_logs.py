"""Apps' logs last: kept in the store across a control-plane restart, read back filtered (by
function, call, text, tail, time) and as JSON, by a deployed app's name or any app's id, and never
by another workspace; each line with the input that printed it; Ember's own events among them.
Real processes: the CLI as a user runs it."""

import collections
import datetime
import json
import os
import re
import subprocess
import time

import pytest

import ember
from conftest import APPS, PY, ROOT, wait_for
from ember.proto import api_pb2
from test_dispatch import Exited, plane_test

import logs_app
import tagged_app


def logs(env, *args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([PY, "-m", "ember.cli.main", "app", "logs", *args], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=dict(os.environ, **env))
    assert out.returncode == 0 or not check, out.stderr
    return out


def printed(text: str) -> list[str]:
    """The lines of `ember app logs` output that the app printed: without Ember's own events."""
    return [line for line in text.splitlines() if not line.startswith("ember: ")]


def cli(env, *args) -> str:
    out = subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(APPS), **env))
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_logs_last_across_a_restart_filtered_and_in_their_workspace(cluster):
    env = cluster.env
    cli(env, "deploy", str(APPS / "logs_app.py"))
    speak, quiet = ember.Function.from_name("logger", "speak"), ember.Function.from_name("logger", "quiet")
    assert speak.remote(3) == 3
    quiet.remote()
    wait_for(lambda: "quiet line" in logs(env, "logger").stdout, what="the lines to be kept")
    time.sleep(0.05)
    mid = datetime.datetime.now().isoformat()
    speak.remote(1, "later")
    wait_for(lambda: "warn later" in logs(env, "logger").stderr, what="the later lines")
    with logs_app.app.run():  # an ephemeral app: found by its id
        logs_app.quiet.remote()
        ephemeral = logs_app.app.app_id

    cluster.kill_server()
    cluster.start_server()
    env = cluster.env
    out = logs(env, "logger")
    assert out.stdout.splitlines() == ["hello 0", "hello 1", "hello 2", "quiet line", "later 0"]
    assert printed(out.stderr) == ["warn hello", "warn later"]
    assert logs(env, "logger", "--function", "quiet").stdout == "quiet line\n"
    assert logs(env, "logger", "--search", "lo 1").stdout == "hello 1\n"
    tail = logs(env, "logger", "--tail", "2", "--function", "speak")
    assert (tail.stdout, tail.stderr) == ("later 0\n", "warn later\n")
    since = logs(env, "logger", "--since", mid)
    assert (since.stdout, printed(since.stderr)) == ("later 0\n", ["warn later"])
    assert logs(env, "logger", "--until", mid, "--function", "quiet").stdout == "quiet line\n"
    assert logs(env, "logger", "--since", "1h", "--search", "quiet").stdout == "quiet line\n"
    stamped = logs(env, "logger", "--timestamps", "--function", "quiet").stdout
    assert stamped.endswith(" quiet line\n") and datetime.datetime.fromisoformat(stamped.split()[0])
    lines = [json.loads(line) for line in logs(env, "logger", "--json").stdout.splitlines()]
    assert [(e["function"], e["stream"], e["text"]) for e in lines if e["stream"] != "ember"][3:5] == [
        ("speak", "stderr", "warn hello\n"), ("quiet", "stdout", "quiet line\n")]
    assert all(e["container"] and e["time"] > 0 for e in lines)
    assert [e["seq"] for e in lines] == sorted(e["seq"] for e in lines)
    assert logs(env, ephemeral).stdout == "quiet line\n"

    # After the restart, lines go on being kept after the old ones (numbered on from them).
    speak.remote(1, "after")
    wait_for(lambda: "after 0" in logs(env, "logger").stdout, what="a line printed after the restart")
    assert logs(env, "logger").stdout.splitlines()[-2:] == ["later 0", "after 0"]

    # -f: the history that matches, then the lines as they come, filtered alike.
    followed = cluster.tmp / "followed"
    with open(followed, "w") as out, open(cluster.tmp / "followed-stderr", "w") as errors:  # events: on stderr
        follower = subprocess.Popen([PY, "-m", "ember.cli.main", "app", "logs", "logger", "-f", "--function", "quiet"],
                                    stdout=out, stderr=errors, cwd=ROOT, env=dict(os.environ, **env))
    try:
        wait_for(lambda: followed.read_text() == "quiet line\n", what="the follower's history")
        speak.remote(1, "unfollowed")
        quiet.remote()
        wait_for(lambda: followed.read_text() == "quiet line\nquiet line\n", what="a followed line")
        assert "unfollowed" in logs(env, "logger").stdout and "unfollowed" not in followed.read_text()
    finally:
        follower.terminate()
        follower.wait(10)

    # Another workspace's token finds neither app.
    cli(env, "workspace", "create", "b")
    t = json.loads(cli(env, "token", "new", "--workspace", "b", "--json"))
    b = dict(env, EMBER_TOKEN_ID=t["token_id"], EMBER_TOKEN_SECRET=t["token_secret"])
    for ref in ("logger", ephemeral):
        out = logs(b, ref, check=False)
        assert out.returncode == 1 and not out.stdout and "no app" in out.stderr, out.stderr
    bad = logs(env, "logger", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "neither a duration" in bad.stderr


def test_each_line_carries_its_input_and_containers_say_why_they_ended(cluster):
    """Concurrent inputs (threads, and async tasks on one loop) print lines in pieces beside each
    other: each line is whole and tagged with the input (and call) that printed it; --call finds
    one call's lines. Ember's own events are in the log: containers started, and why each ended."""
    env = cluster.env
    with tagged_app.app.run():
        app_id = tagged_app.app.app_id
        ran = {}  # input id -> call id, as the inputs saw them
        for fn in (tagged_app.threads, tagged_app.tasks):
            ran.update(fn.map([3] * 8))
        one = tagged_app.threads.spawn(2)
        ran.update([one.get()])
        assert len(ran) == 17 and len(set(ran.values())) == 3
        flaky = tagged_app.flaky.spawn(str(cluster.tmp / "flaky-marker"))
        assert flaky.get() == "ok"
        with pytest.raises(ember.exception.ContainerExitedError):
            tagged_app.crash.remote()
        with pytest.raises(ember.exception.FunctionTimeoutError):
            tagged_app.overrun.remote()
        assert tagged_app.brief.remote() == "done"
        wait_for(lambda: "scaled down: idle for 1s" in logs(env, app_id).stderr, what="the idle container to stop")

    lines = [json.loads(line) for line in logs(env, app_id, "--json").stdout.splitlines()]
    printed_lines = [e for e in lines if e["function"] in ("threads", "tasks") and e["stream"] == "stdout"]
    imported = [e for e in printed_lines if e["text"] == "imported, outside any input\n"]
    assert len(imported) == 2 and all(e["input"] is None and e["call"] is None for e in imported)
    tagged = [e for e in printed_lines if e not in imported]
    assert len(tagged) == 16 * 3 + 2
    for e in tagged:
        input_id = e["text"].split(" of ")[0]
        assert re.fullmatch(rf"{input_id} of {ran[input_id]} line [0-2] end\n", e["text"]), e
        assert (e["input"], e["call"]) == (input_id, ran[input_id]), e
    per_input = collections.Counter(e["input"] for e in tagged)
    assert sorted(per_input.values()) == [2] + [3] * 16 and set(per_input) == set(ran)

    # One call's lines: its input's, and Ember's words about it (a retry).
    out = logs(env, app_id, "--call", one.object_id)
    own = [i for i, c in ran.items() if c == one.object_id]
    assert out.stdout == "".join(f"{own[0]} of {one.object_id} line {i} end\n" for i in range(2))
    retried = logs(env, app_id, "--call", flaky.object_id).stderr
    assert "ember: flaky input" in retried and "failed (attempt 1 of 2): RuntimeError: the first attempt fails" \
        in retried and "retrying in" in retried, retried

    events = [e for e in lines if e["stream"] == "ember"]
    started = [e for e in events if " started on worker w1 " in e["text"]]
    assert {e["function"] for e in started} == {"threads", "tasks", "flaky", "crash", "overrun", "brief"}
    assert all(e["container"] and e["text"].startswith(f"ember: container {e['container']} ") for e in started)
    print("container starts:", [e["text"].rpartition(" in ")[2].strip() for e in started])
    exits = {e["function"]: e["text"] for e in events if " exited: " in e["text"]}
    assert "crashed: it exited with code 3" in exits["crash"], exits
    assert "input timeout: input " in exits["overrun"] and "ran longer than timeout=1s" in exits["overrun"], exits
    assert "scaled down: idle for 1s (scaledown_window)" in exits["brief"], exits
    # Those still running when the app stopped say so, once their exits are in.
    wait_for(lambda: "its app stopped: its client stopped it" in logs(env, app_id, "--function", "threads").stderr,
             what="the app's containers to stop")


@plane_test
async def test_a_containers_tags_are_checked_and_its_exits_explained(p):
    """Without processes: a container's lines are tagged only with inputs it holds (their calls
    the control plane's to say), never as Ember's events; each exit and loss says its cause."""
    fn = p.function()
    p.call(fn, n=1)
    (cid,) = p.started()
    c, _ = p.connect(cid, want=1)
    fn.app.log.append([api_pb2.LogEntry(fd=1, data="mine\n", input_id="fc-1:0", call_id="fc-other"),
                       api_pb2.LogEntry(fd=1, data="claims another's\n", input_id="fc-9:0", call_id="fc-9"),
                       api_pb2.LogEntry(fd=3, data="ember: a forged event\n")], cid, fn.name, c.held)
    p.fleet.container_exited(Exited(container_id=cid, cause=Exited.OUT_OF_MEMORY, exit_code=-9,
                                    reason="exceeded its memory limit of 128 MiB and was killed"), p.worker)
    p.call(fn, call_id="fc-2")
    c2, _ = p.connect(p.started()[-1], want=1)
    p.fleet.container_exited(Exited(container_id=c2.container_id, cause=Exited.EXITED, exit_code=-11,
                                    reason="was killed by SIGSEGV"), p.worker)
    p.call(fn, call_id="fc-3")
    c3, _ = p.connect(p.started()[-1], want=1)
    p.fleet.lost(c3, "its worker w1 is gone")
    await p.store.durable()
    rows = [(fd, data, container, input_id, call_id)
            for _, _, _, _, _, _, container, input_id, fd, data, call_id in p.store.logs("main", p.app_id)]
    assert rows[1:4] == [(1, "mine\n", cid, "fc-1:0", "fc-1"), (1, "claims another's\n", cid, "", ""),
                         (2, "ember: a forged event\n", cid, "", "")]
    events = [data for fd, data, *_ in rows if fd == 3]
    assert events == [
        f"ember: container {cid} started on worker w1 in 0 ms\n",
        f"ember: container {cid} exited: killed for memory: it exceeded its memory limit of 128 MiB and was killed\n",
        f"ember: container {c2.container_id} started on worker w1 in 0 ms\n",
        f"ember: container {c2.container_id} exited: crashed: it was killed by SIGSEGV\n",
        f"ember: container {c3.container_id} started on worker w1 in 0 ms\n",
        f"ember: container {c3.container_id} was lost (its worker w1 is gone): its inputs go back to the queue\n"]
