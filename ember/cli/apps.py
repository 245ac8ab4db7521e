"""`ember deploy FILE` and `ember app list|stop|logs|history|failures`: deployed apps."""

import datetime
import sys

import grpc

from .. import config
from .._client.client import Client, translate
from ..app import print_logs
from ..proto import api_pb2
from .errors import report
from .run import find_app, import_file


def add_parsers(sub):
    deploy = sub.add_parser("deploy", help="deploy an app: its functions stay callable after this command",
                            description="Deploy FILE's app (a new version if it is deployed already; calls "
                                        "in flight finish on the old version). Needs EMBER_SERVER_URL.")
    deploy.add_argument("file")
    deploy.add_argument("--name", help="the deployed app's name (default: the App's name)")
    deploy.add_argument("-e", "--env", help="Modal's environment: Ember has none (workspaces, chosen by the token, "
                                            "are its namespaces)")
    image = sub.add_parser("image", help="the images of live apps and the disk their layers take")
    image.add_subparsers(dest="action", metavar="ACTION", required=True).add_parser(
        "list", help="images of the workspace's live apps: layers, unpacked size, archive size in the blob store")
    app = sub.add_parser("app", help="list, stop and follow deployed apps")
    cmds = app.add_subparsers(dest="action", metavar="ACTION", required=True)
    cmds.add_parser("list", help="running apps: deployed ones and ephemeral runs")
    cmds.add_parser("stop", help="stop a deployed app").add_argument("name")
    logs = cmds.add_parser("logs", help="what a deployed app's containers printed")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as it happens")
    cmds.add_parser("history", help="a deployed app's versions").add_argument("name")
    failures = cmds.add_parser("failures", help="an app's inputs that failed, their retries spent (`ember call "
                                                "retry` runs them again)")
    failures.add_argument("name", metavar="NAME|APP_ID")
    failures.add_argument("--json", action="store_true", help="as JSON, with every attempt's error, traceback, "
                                                              "container and worker")


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
        for i in images:
            print(f"{i.image_id[:12]}\t{i.layers} layers\t{_mb(i.size)} unpacked\t{_mb(i.archive_size)} archived\t"
                  f"{', '.join(i.functions)}")
        if not images:
            print("no live app uses an image", file=sys.stderr)
    elif args.action == "list":
        resp = client.run(client.rpc("AppList", api_pb2.Empty()))
        for a in resp.apps:
            kind = f"deployed v{a.version}" if a.deployed else "ephemeral"
            print(f"{a.name}\t{a.app_id}\t{kind}\t{_state(a)}\t{a.num_functions} functions")
        if not resp.apps:
            print("no running apps", file=sys.stderr)
    elif args.action == "stop":
        client.run(client.rpc("AppStop", api_pb2.AppRef(name=args.name)))
        print(f"stopped app {args.name}")
    elif args.action == "failures":
        from .failures import list_failures
        return list_failures(client, args.name, args.json)
    elif args.action == "history":
        resp = client.run(client.rpc("AppHistory", api_pb2.AppRef(name=args.name)))
        for a in resp.apps:
            print(f"v{a.version}\t{a.app_id}\tdeployed {_when(a.created_at)}\t{_state(a)}"
                  + (f" at {_when(a.stopped_at)}" if a.stopped_at else ""))
    else:
        try:
            client.run(_logs(client, args.name, args.follow))
        except KeyboardInterrupt:  # how one stops following
            pass
    return 0


async def _logs(client: Client, name: str, follow: bool):
    try:
        async for batch in client.stub.AppLogs(api_pb2.AppLogsRequest(app_name=name, stop_at_end=not follow)):
            print_logs(batch)
    except grpc.aio.AioRpcError as e:
        raise translate(e, f"the logs of {name}") from None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
