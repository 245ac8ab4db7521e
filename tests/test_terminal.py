"""The caller's terminal: an image build shows a line per step with its output folded away (shown
when the step fails, and with -v), a .map a progress bar; piped, plain lines and no bar. List
commands print a table on a terminal, tab-separated rows when piped, and JSON with --json.

Terminals are real pseudo-terminals (pty); builds run on the process backend, whose steps
(local Python source, run_function) need neither the network nor the Debian base."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
import uuid

import pytest
from conftest import module_cluster

import ember
from ember.cli.main import main as ember_main

APP = '''
import os
import ember

app = ember.App("progress")
TOKEN = os.environ.get("PROGRESS_TOKEN", "")  # the caller's: a container builds nothing


def noisy(token, fail):
    for i in range(40):
        print(f"noise line {i} of {token}", flush=True)
    if fail:
        raise SystemExit(f"the step broke on purpose ({token})")


image = (ember.Image.debian_slim().add_local_python_source("progress_helper")
         .run_function(noisy, args=(TOKEN, os.environ.get("PROGRESS_FAIL") == "1")))


@app.function(image=image)
def double(x):
    print(f"doubling {x}", flush=True)
    if x == 7:
        raise ValueError("seven is not doubled")
    return 2 * x


@app.local_entrypoint()
def main():
    results = list(double.map(range(30), return_exceptions=True))
    print("sum", sum(r for r in results if isinstance(r, int)))
'''
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def term_cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("cluster"), backend="process") as c:
        yield c


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "progress_app.py").write_text(APP)
    (tmp_path / "progress_helper.py").write_text("HELPER = 1\n")
    return tmp_path


def ember_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "ember.cli.main", *args]


def in_pty(argv: list[str], cwd, env: dict, timeout: float = 120) -> tuple[int, str]:
    """Run argv with a pseudo-terminal (120 columns) as stdin, stdout and stderr: its exit code and
    what it wrote, ANSI escapes removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, close_fds=True,
                            env=dict(os.environ, TERM="xterm-256color", COLUMNS="120", **env))
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every end of the terminal closed
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, ANSI.sub("", out.decode(errors="replace")).replace("\r", "")


def noise(out: str, token: str) -> list[str]:
    return re.findall(rf"noise line \d+ of {token}", out)


def test_a_build_shows_a_line_per_step_and_a_map_a_bar_in_a_terminal(term_cluster, app_dir):
    token = uuid.uuid4().hex[:8]
    started = time.monotonic()
    code, out = in_pty(ember_cmd("run", "progress_app.py"), app_dir, {"PROGRESS_TOKEN": token})
    print(f"ember run in a pty: {time.monotonic() - started:.2f}s")
    assert code == 0, out
    assert re.search(r"✓ \[2/3\] add_local_python_source progress_helper built in \d", out), out
    assert re.search(r"✓ \[3/3\] run_function noisy built in \d", out), out
    assert noise(out, token) == [], out  # folded away: the step succeeded
    assert "doubling 29" in out and "sum 856" in out
    assert re.search(r"double\.map .*30/30 .*1 failed", out), out  # the bar's last state stays
    # Built: nothing of the build shows the next time.
    code, again = in_pty(ember_cmd("run", "progress_app.py"), app_dir, {"PROGRESS_TOKEN": token})
    assert code == 0 and "[3/3]" not in again and "sum 856" in again, again


def test_a_failing_step_shows_its_output_in_full_as_does_verbose(term_cluster, app_dir):
    token = uuid.uuid4().hex[:8]
    code, out = in_pty(ember_cmd("run", "progress_app.py"), app_dir, {"PROGRESS_TOKEN": token, "PROGRESS_FAIL": "1"})
    assert code == 1, out
    assert re.search(r"✗ \[3/3\] run_function noisy failed after \d", out), out
    shown = out.split("failed after", 1)[1]
    assert [f"noise line {i} of {token}" for i in range(40)] == noise(shown, token)[:40], out
    assert f"the step broke on purpose ({token})" in shown and "Image build failed" in shown

    token = uuid.uuid4().hex[:8]
    code, out = in_pty(ember_cmd("run", "-v", "progress_app.py"), app_dir, {"PROGRESS_TOKEN": token})
    assert code == 0, out
    assert len(noise(out, token)) == 40 and re.search(r"✓ \[3/3\] run_function noisy built in", out), out


def test_piped_a_build_prints_plain_lines_and_a_map_no_bar(term_cluster, app_dir):
    token = uuid.uuid4().hex[:8]
    env = dict(os.environ, PROGRESS_TOKEN=token)
    run = subprocess.run(ember_cmd("run", "progress_app.py"), cwd=app_dir, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stdout + run.stderr
    lines = run.stderr.splitlines()
    assert "[3/3] run_function noisy ..." in lines, run.stderr
    assert any(re.fullmatch(r"\[3/3\] run_function noisy: built in \d+\.\ds", line) for line in lines), run.stderr
    assert noise(run.stderr, token) == [] and "double.map" not in run.stderr + run.stdout
    assert "sum 856" in run.stdout

    failed = subprocess.run(ember_cmd("run", "progress_app.py"), cwd=app_dir, env=dict(env, PROGRESS_FAIL="1"),
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "\x1b" not in failed.stderr
    assert "[3/3] run_function noisy: failed after" in failed.stderr
    assert len(noise(failed.stderr.split("failed after", 1)[1], token)) >= 40, failed.stderr


def cli_json(capsys, *args):
    """An `ember` list command's --json output, parsed (run in this process: stdout is captured)."""
    capsys.readouterr()
    assert ember_main([*args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_every_list_command_prints_json(term_cluster, tmp_path, capsys, monkeypatch):
    name = f"js{uuid.uuid4().hex[:6]}"
    deployed = tmp_path / "deployed_app.py"
    deployed.write_text(textwrap.dedent(f'''
        import ember
        app = ember.App("{name}")

        @app.function()
        def f(x):
            return x
    '''))
    for argv in (["secret", "create", name, "K=v"], ["dict", "create", name], ["queue", "create", name],
                 ["volume", "create", name], ["workspace", "create", name], ["proxy-token", "create"],
                 ["token", "new", "--name", name], ["deploy", str(deployed)]):
        assert ember_main(argv) == 0, (argv, capsys.readouterr().err)
    local = tmp_path / "file.txt"
    local.write_text("hello")
    assert ember_main(["volume", "put", name, str(local), "/file.txt"]) == 0
    ember.Dict.from_name(name)["k"] = 1

    def named(rows, key="name"):
        return {row[key]: row for row in rows}

    assert named(cli_json(capsys, "secret", "list"))[name]["keys"] == 1
    assert named(cli_json(capsys, "dict", "list"))[name]["entries"] == 1
    assert named(cli_json(capsys, "queue", "list"))[name]["items"] == 0
    assert named(cli_json(capsys, "volume", "list"))[name]["files"] == 1
    assert cli_json(capsys, "volume", "ls", name) == [
        {"type": "file", "size": 5, "path": "file.txt", "mtime": pytest.approx(local.stat().st_mtime, abs=1)}]
    assert len(cli_json(capsys, "proxy-token", "list")) == 1
    assert named(cli_json(capsys, "token", "list"), "name")[name]["role"] == "workspace"
    assert named(cli_json(capsys, "workspace", "list"))[name]["max_cpu"] is None
    assert named(cli_json(capsys, "worker", "list"))["w1"]["state"] == "connected"
    app = named(cli_json(capsys, "app", "list"))[name]
    assert app["deployed"] is True and app["version"] == 1 and app["functions"] == 1
    assert [(v["version"], v["state"]) for v in cli_json(capsys, "app", "history", name)] == [(1, "running")]
    assert cli_json(capsys, "app", "failures", name) == []
    assert any(f"{name}.f" in i["functions"] for i in cli_json(capsys, "image", "list"))
    assert isinstance(cli_json(capsys, "usage"), list)
    config = tmp_path / "ember.toml"
    config.write_text('[default]\nserver_url = "https://one.example:7070"\ntoken_id = "a"\ntoken_secret = "b"\n')
    monkeypatch.setenv("EMBER_CONFIG_PATH", str(config))
    assert cli_json(capsys, "profile", "list") == [
        {"name": "default", "active": True, "server_url": "https://one.example:7070"}]

    # On a terminal, a table with a header; piped, the rows as tab-separated lines.
    code, out = in_pty(ember_cmd("secret", "list"), tmp_path, {})
    assert code == 0 and re.search(r"NAME +KEYS +CREATED", out) and re.search(rf"{name} +1 keys +created", out), out
    piped = subprocess.run(ember_cmd("secret", "list"), capture_output=True, text=True, timeout=60)
    assert re.search(rf"^{name}\t1 keys\tcreated ", piped.stdout, re.MULTILINE) and "NAME" not in piped.stdout
