"""`ember sandbox list|stop|exec`: the workspace's sandboxes (ember.Sandbox), from the shell.

`exec` runs a command in a running sandbox as `ember container exec` does in a container (a
terminal when this one is, else pipes; its exit code is this command's).
"""

import argparse
import sys

from .. import config, exception
from .._client.client import Client
from ..proto import api_pb2
from .containers import _age, _is_terminal, exec_in
from .output import Column, print_rows

Info = api_pb2.SandboxInfo


def add_parsers(sub):
    sandbox = sub.add_parser("sandbox", help="list, enter and stop sandboxes (ember.Sandbox)")
    cmds = sandbox.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = cmds.add_parser("list", help="the workspace's sandboxes, running and lately ended (an admin's: all)")
    ls.add_argument("--app", metavar="APP_ID", help="only this app's sandboxes")
    ls.add_argument("--json", action="store_true", help="as JSON, for scripts")
    cmds.add_parser("stop", help="terminate a sandbox now (its container is killed)").add_argument(
        "sandbox_id", metavar="ID")
    ex = cmds.add_parser("exec", help="run a command in a running sandbox",
                         description="Run CMD in the running sandbox ID (its filesystem, environment and limits). "
                                     "Interactive with a terminal when this one is. Exits with CMD's exit code.",
                         usage="ember sandbox exec [-T] ID -- CMD [ARG ...]")
    ex.add_argument("sandbox_id", metavar="ID")
    ex.add_argument("-T", "--no-tty", action="store_true", help="plain pipes, even on a terminal")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments")


def run(args) -> int:
    if config.server_url() is None:
        print("ember: no control plane given: set EMBER_SERVER_URL", file=sys.stderr)
        return 2
    client = Client.from_env()
    if args.action == "list":
        resp = client.run(client.rpc("SandboxList", api_pb2.SandboxListRequest(app_id=args.app or "")))
        rows = [{"sandbox_id": s.sandbox_id, "app": s.app_name, "app_id": s.app_id, "name": s.name,
                 "state": Info.State.Name(s.state).lower(), "returncode": s.returncode if s.state == Info.ENDED
                 else None, "error": s.error, "container_id": s.container_id, "worker": s.worker,
                 "created_at": s.created_at, "tags": dict(s.tags), "command": list(s.argv),
                 "workspace": s.workspace} for s in resp.sandboxes]
        columns = [Column("sandbox_id", "SANDBOX"), Column("app", "APP"), Column("name", "NAME", lambda n: n or "-"),
                   Column("state", "STATE"), Column("returncode", "CODE", lambda c: "-" if c is None else str(c)),
                   Column("worker", "WORKER", lambda w: w or "-"), Column("created_at", "CREATED", _age),
                   Column("command", "COMMAND", lambda a: " ".join(a)[:40] or "-")]
        print_rows(rows, columns, args.json, empty="no sandboxes")
        return 0
    try:
        info = client.run(client.rpc("SandboxGet", api_pb2.SandboxGetRequest(sandbox_id=args.sandbox_id)))
        if args.action == "stop":
            client.run(client.rpc("SandboxTerminate", api_pb2.SandboxRef(sandbox_id=args.sandbox_id)))
            print(f"stopped sandbox {args.sandbox_id}")
            return 0
    except exception.NotFoundError as e:
        print(f"ember sandbox {args.action}: {e}", file=sys.stderr)
        return 1
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("ember sandbox exec: no command given: ember sandbox exec ID -- CMD [ARG ...]", file=sys.stderr)
        return 2
    if info.state != Info.RUNNING:
        why = "is still starting: try again in a moment" if info.state == Info.STARTING else \
            f"has ended (returncode {info.returncode}{': ' + info.error if info.error else ''})"
        print(f"ember sandbox exec: sandbox {args.sandbox_id} {why}", file=sys.stderr)
        return 1
    return exec_in(client, info.container_id, argv, tty=not args.no_tty and _is_terminal())
