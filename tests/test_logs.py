"""Apps' logs last: kept in the store across a control-plane restart, read back filtered (by
function, text, tail, time) and as JSON, by a deployed app's name or any app's id, and never by
another workspace. Real processes: the CLI as a user runs it."""

import datetime
import json
import os
import subprocess
import time

import ember
from conftest import APPS, PY, ROOT, wait_for

import logs_app


def logs(env, *args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([PY, "-m", "ember.cli.main", "app", "logs", *args], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=dict(os.environ, **env))
    assert out.returncode == 0 or not check, out.stderr
    return out


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
    assert out.stderr.splitlines() == ["warn hello", "warn later"]
    assert logs(env, "logger", "--function", "quiet").stdout == "quiet line\n"
    assert logs(env, "logger", "--search", "lo 1").stdout == "hello 1\n"
    tail = logs(env, "logger", "--tail", "2")
    assert (tail.stdout, tail.stderr) == ("later 0\n", "warn later\n")
    since = logs(env, "logger", "--since", mid)
    assert (since.stdout, since.stderr) == ("later 0\n", "warn later\n")
    assert logs(env, "logger", "--until", mid, "--function", "quiet").stdout == "quiet line\n"
    assert logs(env, "logger", "--since", "1h", "--search", "quiet").stdout == "quiet line\n"
    stamped = logs(env, "logger", "--timestamps", "--function", "quiet").stdout
    assert stamped.endswith(" quiet line\n") and datetime.datetime.fromisoformat(stamped.split()[0])
    lines = [json.loads(line) for line in logs(env, "logger", "--json").stdout.splitlines()]
    assert [(e["function"], e["stream"], e["text"]) for e in lines][3:5] == [
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
    with open(followed, "w") as out:
        follower = subprocess.Popen([PY, "-m", "ember.cli.main", "app", "logs", "logger", "-f", "--function", "quiet"],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ, **env))
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
