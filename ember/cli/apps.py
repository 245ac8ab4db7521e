"""`ember deploy FILE` and `ember app list|stop|logs|history|failures`: deployed apps."""

import argparse
import datetime
import json
import sys
import time

import grpc

from .. import config, exception
from .._client.client import Client, translate
from ..app import print_logs
from ..proto import api_pb2
from .errors import report
from .output import Column, add_json_flag, add_verbose_flag, list_parser, print_rows
from .run import find_app, import_file

STREAMS = {1: "stdout", 2: "stderr", 3: "ember"}  # LogEntry.fd: 3 is Ember's own event about the app


def add_parsers(sub):
    deploy = sub.add_parser("deploy", help="deploy an app: its functions stay callable after this command",
                            description="Deploy FILE's app (a new version if it is deployed already; calls "
                                        "in flight finish on the old version). Needs EMBER_SERVER_URL.")
    deploy.add_argument("file")
    deploy.add_argument("--name", help="the deployed app's name (default: the App's name)")
    add_verbose_flag(deploy)
    deploy.add_argument("-e", "--env", help="Modal's environment: Ember has none (workspaces, chosen by the token, "
                                            "are its namespaces)")
    image = sub.add_parser("image", help="the images of live apps and the disk their layers take")
    list_parser(image.add_subparsers(dest="action", metavar="ACTION", required=True),
                help="images of the workspace's live apps: layers, unpacked size, archive size in the blob store")
    app = sub.add_parser("app", help="list, stop and follow deployed apps")
    cmds = app.add_subparsers(dest="action", metavar="ACTION", required=True)
    list_parser(cmds, help="running apps: deployed ones and ephemeral runs")
    cmds.add_parser("stop", help="stop a deployed app").add_argument("name")
    logs = cmds.add_parser("logs", help="what an app's containers printed (kept --log-retention hours)")
    logs.add_argument("name", metavar="NAME|APP_ID", help="a deployed app's name, or any app's id (ephemeral too)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as it happens")
    logs.add_argument("--since", type=_time, metavar="WHEN", help="from then on: a duration ago (10m, 2h) or an "
                                                                   "ISO time (2026-05-01T12:00)")
    logs.add_argument("--until", type=_time, metavar="WHEN", help="until then (as --since)")
    logs.add_argument("--tail", type=_count, metavar="N", help="only the last N lines (then follow, with -f)")
    logs.add_argument("--search", metavar="TEXT", help="only lines containing TEXT")
    logs.add_argument("--function", metavar="NAME", help="only this function's lines")
    logs.add_argument("--container", metavar="ID", help="only this container's lines")
    logs.add_argument("--call", metavar="CALL_ID", help="only the lines of this call's inputs (fc-...)")
    logs.add_argument("--timestamps", action="store_true", help="each line with when it was printed")
    logs.add_argument("--json", action="store_true", help="one JSON object a line: time, function, container, "
                                                          "input, call, stream (stdout, stderr, ember), text")
    list_parser(cmds, "history", help="a deployed app's versions").add_argument("name")
    failures = cmds.add_parser("failures", help="an app's inputs that failed, their retries spent (`ember call "
                                                "retry` runs them again)")
    failures.add_argument("name", metavar="NAME|APP_ID")
    add_json_flag(failures, help="as JSON, with every attempt's error, traceback, container and worker")


# Each list's columns; piped, a row is its cells joined by tabs (scripts and tests cut them).
IMAGE_COLUMNS = [Column("image_id", "IMAGE", lambda i: i[:12]), Column("layers", "LAYERS", lambda n: f"{n} layers"),
                 Column("size", "UNPACKED", lambda n: f"{_mb(n)} unpacked"),
                 Column("archive_size", "ARCHIVED", lambda n: f"{_mb(n)} archived"),
                 Column("functions", "FUNCTIONS", ", ".join)]
APP_COLUMNS = [Column("name", "NAME"), Column("app_id", "APP ID"),
               Column("version", "KIND", lambda v: f"deployed v{v}" if v else "ephemeral"),
               Column("state", "STATE"), Column("functions", "FUNCTIONS", lambda n: f"{n} functions")]


def _history_state(row: dict) -> str:
    return row["state"] + (f" at {_when(row['stopped_at'])}" if row["stopped_at"] else "")


HISTORY_COLUMNS = [Column("version", "VERSION", lambda v: f"v{v}"), Column("app_id", "APP ID"),
                   Column("deployed_at", "DEPLOYED", lambda t: f"deployed {_when(t)}"),
                   Column("state", "STATE", row=_history_state)]


def _state(a: api_pb2.AppInfo) -> str:
    return api_pb2.AppState.Name(a.state).removeprefix("APP_STATE_").lower()


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def deploy(args) -> int:
    try:
        app = find_app(import_file(args.file))
        version = app.deploy(args.name)
    except Exception as e:  # noqa: BLE001 - the user's file failed to import, or the app to deploy
        report(e)
        return 1
    name = args.name or app.name
    print(f"deployed app {name} as version {version}; its functions: {', '.join(sorted(app._functions))}")
    print(f"call them from anywhere with ember.Function.from_name({name!r}, NAME)")
    return 0


def run(args) -> int:
    if config.server_url() is None:
        print("ember: no control plane given: set EMBER_SERVER_URL", file=sys.stderr)
        return 2
    client = Client.from_env()
    if args.command == "image":
        images = client.run(client.rpc("ImageList", api_pb2.Empty())).images
        rows = [{"image_id": i.image_id, "layers": i.layers, "size": i.size, "archive_size": i.archive_size,
                 "functions": list(i.functions)} for i in images]
        print_rows(rows, IMAGE_COLUMNS, args.json, empty="no live app uses an image")
    elif args.action == "list":
        apps = client.run(client.rpc("AppList", api_pb2.Empty())).apps
        rows = [{"name": a.name, "app_id": a.app_id, "deployed": a.deployed,
                 "version": a.version if a.deployed else None,
                 "state": _state(a), "functions": a.num_functions} for a in apps]
        print_rows(rows, APP_COLUMNS, args.json, empty="no running apps")
    elif args.action == "stop":
        client.run(client.rpc("AppStop", api_pb2.AppRef(name=args.name)))
        print(f"stopped app {args.name}")
    elif args.action == "failures":
        from .failures import list_failures
        return list_failures(client, args.name, args.json)
    elif args.action == "history":
        apps = client.run(client.rpc("AppHistory", api_pb2.AppRef(name=args.name))).apps
        rows = [{"version": a.version, "app_id": a.app_id, "deployed_at": a.created_at, "state": _state(a),
                 "stopped_at": a.stopped_at or None} for a in apps]
        print_rows(rows, HISTORY_COLUMNS, args.json, empty=f"no versions of {args.name}")
    else:
        try:
            client.run(_logs(client, args))
        except KeyboardInterrupt:  # how one stops following
            pass
    return 0


async def _logs(client: Client, args):
    ref = {"app_id": args.name} if args.name.startswith("ap-") else {"app_name": args.name}
    req = api_pb2.AppLogsRequest(**ref, stop_at_end=not args.follow, since=args.since or 0, until=args.until or 0,
                                 tail=args.tail or 0, search=args.search or "", function_name=args.function or "",
                                 container_id=args.container or "", call_id=args.call or "")
    try:
        async for batch in client.stub.AppLogs(req):
            if args.json:
                for e in batch.entries:
                    print(json.dumps({"time": e.timestamp, "app_id": args.name if ref.get("app_id") else None,
                                      "function": e.function_name, "container": e.container_id or None,
                                      "input": e.input_id or None, "call": e.call_id or None,
                                      "stream": STREAMS.get(e.fd, "stderr"),
                                      "seq": e.seq, "text": e.data}), flush=True)
            elif args.timestamps:
                for e in batch.entries:
                    out = sys.stdout if e.fd == 1 else sys.stderr
                    stamp = datetime.datetime.fromtimestamp(e.timestamp).isoformat(timespec="milliseconds")
                    out.write("".join(f"{stamp} {line}" for line in e.data.splitlines(keepends=True)))
                    out.flush()
            else:
                print_logs(batch, events=True)
    except grpc.aio.AioRpcError as e:
        raise translate(e, f"the logs of {args.name}") from None


def _time(text: str) -> float:
    """Unix time of --since/--until: a duration ago ('10m', '2h', '7d'), or an ISO time (local, unless
    it says its zone)."""
    from .identity import duration
    try:
        return time.time() - duration(text)
    except exception.InvalidError:
        pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a duration (10m, 2h, 7d) nor an ISO time "
                                         "(2026-05-01T12:00:00)") from None


def _count(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines: give a whole number above 0")
    return int(text)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
