"""`ember container list|logs|exec|stop` and `ember shell`: containers you can inspect and enter.

`exec` runs a command in a running container, as its function's code runs (its namespaces,
root filesystem, cgroups, environment and working directory), over one ContainerExec stream:
with a terminal when this one is (raw mode, its size and resizes passed on), else with pipes.
The command's exit code is this command's. `shell` starts a container of a function (its image,
volumes, secrets and resources; no input runs in it) and execs a shell in it.
"""

import argparse
import asyncio
import os
import shutil
import signal
import sys
import threading
import time

import grpc

from .. import config, exception
from .._client.client import Client, translate
from .._client.container_exec import ContainerExec
from ..app import print_logs
from ..proto import api_pb2
from .output import Column, print_rows

# What `ember shell` runs by default: bash where the image has it, as Modal's shell does.
DEFAULT_SHELL = ["/bin/sh", "-c", 'if [ -x /bin/bash ]; then exec /bin/bash; else exec /bin/sh; fi']
SHELL_READY_TIMEOUT = 600.0  # seconds for the shell's container to start (its image may build first)


def add_parsers(sub):
    container = sub.add_parser("container", help="list, inspect, enter and stop running containers")
    cmds = container.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = cmds.add_parser("list", help="the workspace's running containers (an admin's: all)")
    ls.add_argument("--app", metavar="NAME|APP_ID", help="only this app's containers")
    ls.add_argument("--json", action="store_true", help="as JSON, for scripts")
    logs = cmds.add_parser("logs", help="what a container printed (kept --log-retention hours)")
    logs.add_argument("container_id", metavar="ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as it happens")
    ex = cmds.add_parser("exec", help="run a command in a running container",
                         description="Run CMD in the running container ID, as its function's code runs (its "
                                     "filesystem, environment, working directory and limits). Interactive with a "
                                     "terminal when this one is. Exits with CMD's exit code.",
                         usage="ember container exec [-T] ID -- CMD [ARG ...]")
    ex.add_argument("container_id", metavar="ID")
    ex.add_argument("-T", "--no-tty", action="store_true", help="plain pipes, even on a terminal")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments")
    cmds.add_parser("stop", help="stop a container now (the inputs it ran are retried elsewhere)").add_argument(
        "container_id", metavar="ID")
    shell = sub.add_parser("shell", help="a shell in a new container of a function: its image, volumes, secrets",
                           description="Start a container with FILE::FUNCTION's image, volumes, secrets and "
                                       "resources (it loads the function's code but runs no input) and open a "
                                       "shell in it; the container stops when the shell exits.")
    shell.add_argument("target", metavar="FILE::FUNCTION", nargs="?")
    shell.add_argument("--image", metavar="FILE::IMAGE|REF", help="instead of a function's: an ember.Image of a "
                                                                   "file (FILE::VARIABLE), or a registry image")
    shell.add_argument("--cmd", metavar="CMD", help="run this (a shell command line) instead of bash (or sh)")
    shell.add_argument("-T", "--no-tty", action="store_true", help="plain pipes, even on a terminal")


def run(args) -> int:
    if args.command == "shell":
        return shell(args)
    if config.server_url() is None:
        print("ember: no control plane given: set EMBER_SERVER_URL", file=sys.stderr)
        return 2
    client = Client.from_env()
    if args.action == "list":
        return list_containers(client, args.app, args.json)
    if args.action == "stop":
        try:
            client.run(client.rpc("ContainerStop", api_pb2.ContainerRef(container_id=args.container_id)))
        except exception.NotFoundError as e:
            print(f"ember container stop: {e}", file=sys.stderr)
            return 1
        print(f"stopped container {args.container_id}")
        return 0
    if args.action == "logs":
        try:
            client.run(_logs(client, args.container_id, args.follow))
        except KeyboardInterrupt:  # how one stops following
            pass
        return 0
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("ember container exec: no command given: ember container exec ID -- CMD [ARG ...]", file=sys.stderr)
        return 2
    return exec_in(client, args.container_id, argv, tty=not args.no_tty and _is_terminal())


async def _logs(client: Client, container_id: str, follow: bool):
    req = api_pb2.AppLogsRequest(container_id=container_id, stop_at_end=not follow)
    try:
        async for batch in client.stub.AppLogs(req):
            print_logs(batch)
    except grpc.aio.AioRpcError as e:
        raise translate(e, f"the logs of container {container_id}") from None


def list_containers(client: Client, app: str | None, as_json: bool) -> int:
    ref = {}
    if app:
        ref = {"app_id": app} if app.startswith("ap-") else {"app_name": app}
    resp = client.run(client.rpc("ContainerList", api_pb2.ContainerListRequest(**ref)))
    rows = [{"container_id": c.container_id, "app": c.app_name, "app_id": c.app_id, "function": c.function_name,
             "worker": c.worker, "image": c.image_id, "started_at": c.started_at,
             "state": "stopping" if c.stopping else _state(c.state), "inputs": c.inputs_in_flight,
             "workspace": c.workspace} for c in resp.containers]
    columns = [Column("container_id", "CONTAINER"), Column("app", "APP"), Column("function", "FUNCTION"),
               Column("worker", "WORKER"), Column("image", "IMAGE", lambda i: (i or "-")[:12]),
               Column("started_at", "STARTED", _age), Column("state", "STATE"), Column("inputs", "INPUTS")]
    print_rows(rows, columns, as_json, empty="no running containers")
    return 0


def _state(state: int) -> str:
    return {api_pb2.CONTAINER_STATE_READY: "running"}.get(
        state, api_pb2.ContainerState.Name(state).removeprefix("CONTAINER_STATE_").lower())


def _age(started_at: float) -> str:
    seconds = max(0, int(time.time() - started_at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def exec_in(client: Client, container_id: str, argv: list[str], tty: bool) -> int:
    """Run argv in the container, this terminal's (or pipes') stdin and output passed both ways;
    returns its exit code (1 with the reason on stderr, if it could not run or was cut short)."""
    rows, cols = _size() if tty else (0, 0)
    saved = None
    running: list = []  # (loop, exec) once it runs: where this terminal's resizes go
    if tty:
        import termios
        import tty as tty_mode
        saved = termios.tcgetattr(0)
        tty_mode.setraw(0, termios.TCSANOW)  # every key goes to the command, ^C and ^D too (typed ahead too)
        # Signals come to the main thread, which waits on the client's loop: it passes sizes over.
        signal.signal(signal.SIGWINCH, lambda *_: [loop.call_soon_threadsafe(ex.resize, *_size())
                                                   for loop, ex in running])
    try:
        return client.run(_exec(client, container_id, argv, tty, rows, cols, running))
    except KeyboardInterrupt:  # (without a terminal: with one, ^C goes to the command) it is killed
        return 130
    except exception.Error as e:
        print(f"\r\nember container exec: {e}" if tty else f"ember container exec: {e}", file=sys.stderr)
        return 1
    finally:
        if saved is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)


async def _exec(client: Client, container_id: str, argv: list[str], tty: bool, rows: int, cols: int,
                running: list) -> int:
    loop = asyncio.get_running_loop()
    ex = ContainerExec(client, container_id, argv, tty=tty, rows=rows, cols=cols, env=_term_env() if tty else None)
    running.append((loop, ex))
    _read_stdin(loop, ex)
    async for out in ex.outputs():
        if out.data:
            os.write(2 if out.fd == 2 else 1, out.data)
        if out.exited:
            if out.error:
                raise exception.ExecutionError(out.error)
            return out.exit_code if out.exit_code >= 0 else 128 - out.exit_code  # as a shell shows a signal
    raise exception.ExecutionError("the control plane ended the command's stream before it exited")


def _read_stdin(loop, ex: ContainerExec):
    """This process's stdin to the command, read by a thread (stdin may be a file, which the event
    loop cannot watch), until it ends."""
    def read():
        while True:
            try:
                data = os.read(0, 65536)
            except OSError:
                data = b""
            if not data:
                loop.call_soon_threadsafe(ex.write_eof)
                return
            loop.call_soon_threadsafe(ex.write, data)

    threading.Thread(target=read, daemon=True, name="ember-exec-stdin").start()


def _size() -> tuple[int, int]:
    """This terminal's rows and columns (its own, whatever COLUMNS and LINES say)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        size = shutil.get_terminal_size()
    return size.lines, size.columns


def _term_env() -> dict[str, str]:
    return {"TERM": os.environ.get("TERM") or "xterm"}


# ---------------------------------------------------------------- ember shell


def shell(args) -> int:
    try:
        app, fn = _shell_function(args.target, args.image)
    except exception.Error as e:
        print(f"ember shell: {e}", file=sys.stderr)
        return 2
    argv = ["/bin/sh", "-c", args.cmd] if args.cmd else DEFAULT_SHELL
    tty = not args.no_tty and _is_terminal()
    with app.run():
        client = Client.from_env()
        fn.update_autoscaler(min_containers=1)  # one container, for as long as the app runs (this command)
        try:
            container_id = _wait_for_container(client, fn.object_id)
        except exception.Error as e:
            print(f"ember shell: {e}", file=sys.stderr)
            return 1
        return exec_in(client, container_id, argv, tty)


def _shell_function(target: str | None, image: str | None):
    """The app to run and the function whose container the shell goes into: FILE::FUNCTION's,
    or a function of an app of its own on the image given."""
    from ..app import App
    from ..image import Image
    from .run import find_app, import_file

    if bool(target) == bool(image):
        raise exception.InvalidError("give FILE::FUNCTION, or --image FILE::VARIABLE (or a registry image's "
                                     "reference), not both")
    if image:
        path, sep, name = image.partition("::")
        if sep:
            img = getattr(import_file(path), name, None)
            if not isinstance(img, Image):
                raise exception.InvalidError(f"{path} has no ember.Image named {name!r}")
        else:
            img = Image.from_registry(image)
        app = App("shell")

        def shell():  # never called: its container is what the shell goes into (pickled: a local function)
            pass

        return app, app.function(image=img)(shell)
    path, _, name = target.partition("::")
    app = find_app(import_file(path))
    if not name:
        raise exception.InvalidError(f"say which function's container to start, as {path}::FUNCTION; the app "
                                     f"has: {', '.join(sorted(app._functions)) or 'none'}")
    fn = app._functions.get(name)
    if fn is None:
        raise exception.InvalidError(f"app {app.name!r} has no function {name!r}; it has: "
                                     f"{', '.join(sorted(app._functions)) or 'none'}")
    return app, fn


def _wait_for_container(client: Client, function_id: str) -> str:
    """The id of the function's container, once it is ready."""
    deadline = time.monotonic() + SHELL_READY_TIMEOUT
    while time.monotonic() < deadline:
        for c in client.run(client.rpc("ContainerList", api_pb2.ContainerListRequest())).containers:
            if c.function_id == function_id and c.state == api_pb2.CONTAINER_STATE_READY and not c.stopping:
                return c.container_id
        time.sleep(0.1)
    raise exception.TimeoutError(f"its container did not start within {SHELL_READY_TIMEOUT:.0f}s")
