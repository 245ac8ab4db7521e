"""`ember dict|queue|volume|secret|proxy-token ...`: manage named objects, and the tokens web
endpoints with requires_proxy_auth=True accept."""

import contextlib
import datetime
import functools
import pathlib
import sys

from .. import config
from .._client.client import Client
from .._client.local_cluster import LocalCluster
from ..dict import Dict
from ..proto import api_pb2
from ..queue import Queue
from ..volume import FileEntryType, Volume
from .output import Column, list_parser, print_rows


def add_parsers(sub):
    for kind in ("dict", "queue"):
        p = sub.add_parser(kind, help=f"manage named {kind}s")
        cmds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
        list_parser(cmds, help=f"list the named {kind}s")
        cmds.add_parser("create", help=f"create a named {kind}").add_argument("name")
        get = cmds.add_parser("get", help="print the value of KEY" if kind == "dict" else
                              "print the first items (without removing them)")
        get.add_argument("name")
        if kind == "dict":
            get.add_argument("key", help="a string key")
        else:
            get.add_argument("n", nargs="?", type=int, default=10, help="how many items (default 10)")
            get.add_argument("--partition")
        clear = cmds.add_parser("clear", help=f"remove everything in the {kind}")
        clear.add_argument("name")
        if kind == "queue":
            clear.add_argument("--partition")
        cmds.add_parser("delete", help=f"delete the {kind} and its contents").add_argument("name")
    p = sub.add_parser("volume", help="manage volumes (files shared by containers)")
    cmds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    cmds.add_parser("create", help="create a volume").add_argument("name")
    list_parser(cmds, help="list the volumes")
    ls = list_parser(cmds, "ls", help="list the files at PATH")
    ls.add_argument("name")
    ls.add_argument("path", nargs="?", default="/")
    put = cmds.add_parser("put", help="upload a local file or directory")
    put.add_argument("name")
    put.add_argument("local")
    put.add_argument("remote", nargs="?", default="/")
    put.add_argument("--force", action="store_true", help="overwrite files that exist")
    get = cmds.add_parser("get", help="download a file (to stdout with LOCAL '-')")
    get.add_argument("name")
    get.add_argument("remote")
    get.add_argument("local", nargs="?", default=".")
    rm = cmds.add_parser("rm", help="remove a file (a directory with -r)")
    rm.add_argument("name")
    rm.add_argument("path")
    rm.add_argument("-r", "--recursive", action="store_true")
    cmds.add_parser("delete", help="delete the volume and its files").add_argument("name")
    p = sub.add_parser("secret", help="manage secrets (environment variables for functions)")
    cmds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = cmds.add_parser("create", help="create a secret from KEY=VALUE pairs")
    create.add_argument("name")
    create.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    create.add_argument("--force", action="store_true", help="replace a secret of that name")
    list_parser(cmds, help="list the secrets (names only, never values)")
    cmds.add_parser("delete", help="delete a secret").add_argument("name")
    p = sub.add_parser("proxy-token", help="manage proxy auth tokens (for requires_proxy_auth web endpoints)")
    cmds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    cmds.add_parser("create", help="create a token; its secret is shown only now")
    list_parser(cmds, help="list the tokens (keys only)")
    cmds.add_parser("delete", help="delete a token: requests with it are refused").add_argument("key")


def _date(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


CREATED = Column("created_at", "CREATED", lambda t: f"created {_date(t)}")


@contextlib.contextmanager
def _connected():
    """The configured control plane, or the embedded local cluster's state for the command."""
    cluster = LocalCluster.start() if config.server_url() is None else None
    try:
        yield Client.from_env()
    finally:
        if cluster is not None:
            cluster.stop()


def run(args) -> int:
    """One connection for every command here; a local file or path that is not there is
    reported like Ember's own errors (in errors.py)."""
    if args.command == "secret":
        handler = run_secret
    elif args.command == "proxy-token":
        handler = run_proxy_token
    elif args.command == "volume" and args.action not in ("create", "list", "delete"):
        handler = run_volume
    else:
        handler = functools.partial(run_named, cls={"dict": Dict, "queue": Queue, "volume": Volume}[args.command])
    try:
        with _connected() as client:
            return handler(args, client) or 0
    except OSError as e:
        print(f"ember: {e}", file=sys.stderr)
        return 1


def run_secret(args, client) -> int | None:
    if args.action == "create":
        env = {}
        for pair in args.pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                print(f"ember: {pair.split('=')[0]!r}: pass KEY=VALUE pairs", file=sys.stderr)
                return 2
            env[key] = value
        client.run(client.rpc("SecretCreate", api_pb2.SecretCreateRequest(
            name=args.name, env=env, force=args.force)))
        print(f"created secret {args.name} with keys {', '.join(env)}")
    elif args.action == "list":
        secrets = client.run(client.rpc("SecretList", api_pb2.Empty())).secrets
        rows = [{"name": s.name, "keys": s.num_keys, "created_at": s.created_at} for s in secrets]
        print_rows(rows, [Column("name", "NAME"), Column("keys", "KEYS", lambda n: f"{n} keys"), CREATED],
                   args.json, empty="no secrets")
    else:
        client.run(client.rpc("SecretDelete", api_pb2.SecretRef(name=args.name)))
        print(f"deleted secret {args.name}")


def run_proxy_token(args, client) -> int | None:
    if args.action == "create":
        t = client.run(client.rpc("ProxyTokenCreate", api_pb2.Empty()))
        print(f"Ember-Key: {t.token_id}\nEmber-Secret: {t.secret}")
        print("send both as headers to endpoints with requires_proxy_auth=True; the secret is not "
              "shown again", file=sys.stderr)
    elif args.action == "list":
        tokens = client.run(client.rpc("ProxyTokenList", api_pb2.Empty())).tokens
        rows = [{"key": t.token_id, "created_at": t.created_at} for t in tokens]
        print_rows(rows, [Column("key", "KEY"), CREATED], args.json, empty="no proxy tokens")
    else:
        client.run(client.rpc("ProxyTokenDelete", api_pb2.ProxyToken(token_id=args.key)))
        print(f"deleted token {args.key}")


def run_volume(args, client) -> int | None:
    vol = Volume.from_name(args.name)
    if args.action == "ls":
        rows = [{"type": "dir" if e.type == FileEntryType.DIRECTORY else "file", "size": e.size, "path": e.path,
                 "mtime": e.mtime} for e in vol.listdir(args.path)]
        # Piped, a directory's type is "dir " as it always was (the columns line up in a terminal).
        print_rows(rows, [Column("type", "TYPE", lambda t: f"{t:4}"), Column("size", "SIZE"), Column("path", "PATH")],
                   args.json, empty=f"nothing at {args.name}:{args.path}")
    elif args.action == "put":
        local = pathlib.Path(args.local)
        with vol.batch_upload(force=args.force) as batch:
            if local.is_dir():
                batch.put_directory(local, args.remote)
            else:
                remote = args.remote + local.name if args.remote.endswith("/") else args.remote
                batch.put_file(local, remote)
        print(f"uploaded {args.local} to {args.name}:{args.remote}")
    elif args.action == "get":
        data = b"".join(vol.read_file(args.remote))
        if args.local == "-":
            sys.stdout.buffer.write(data)
        else:
            dest = pathlib.Path(args.local)
            if dest.is_dir():
                dest = dest / pathlib.PurePosixPath(args.remote).name
            dest.write_bytes(data)
            print(f"downloaded {args.name}:{args.remote} to {dest}")
    else:
        vol.remove_file(args.path, recursive=args.recursive)
        print(f"removed {args.name}:{args.path}")


def run_named(args, client, cls) -> int | None:
    """What dicts, queues and volumes have alike: list, create, delete (and get, clear)."""
    if args.action == "list":
        objects = client.run(client.rpc("ObjectList", api_pb2.ObjectListRequest(kind=cls._kind_proto()))).objects
        unit = {"dict": "entries", "queue": "items", "volume": "files"}[cls._kind]
        rows = [{"name": o.name, unit: o.size, "created_at": o.created_at} for o in objects]
        print_rows(rows, [Column("name", "NAME"), Column(unit, unit.upper(), lambda n: f"{n} {unit}"), CREATED],
                   args.json, empty=f"no named {cls._kind}s")
    elif args.action == "create":
        cls.from_name(args.name, create_if_missing=True).hydrate()
        print(f"created {cls._kind} {args.name}")
    elif args.action == "delete":
        cls.delete(args.name)
        print(f"deleted {cls._kind} {args.name}")
    elif args.action == "clear":
        obj = cls.from_name(args.name)
        obj.clear() if cls is Dict else obj.clear(partition=args.partition)
        print(f"cleared {cls._kind} {args.name}")
    elif cls is Dict:
        d = Dict.from_name(args.name)
        if not d.contains(args.key):
            print(f"ember: dict {args.name} has no key {args.key!r}", file=sys.stderr)
            return 1
        print(repr(d.get(args.key)))
    else:
        q = Queue.from_name(args.name)
        for i, item in enumerate(q.iterate(partition=args.partition)):
            if i >= args.n:
                break
            print(repr(item))
