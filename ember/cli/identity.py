"""`ember token|workspace|worker ...`: who may use the cluster, and the machines it runs on.

Tokens for people and programs (`ember token new`), workspaces and their quotas (admin), and
the workers that have joined (`ember worker list|drain|remove`, admin).
"""

import datetime
import json
import re
import sys

from .._client.client import Client
from ..exception import InvalidError
from ..proto import api_pb2
from .output import Column, list_parser, print_rows

Role = api_pb2.TokenCreateRequest.Role
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WORKER_ACTIONS = ("list", "drain", "remove")


def duration(text: str) -> float:
    """Seconds in '90', '90s', '30m', '12h', '7d' or '2w'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if m is None:
        raise InvalidError(f"{text!r} is not a duration: write a number with s, m, h, d or w (e.g. 12h, 30d)")
    return float(m.group(1)) * UNITS[m.group(2) or "s"]


def memory_mb(text: str) -> int:
    """MiB in '512', '512M', '4G' or '1T'."""
    m = re.fullmatch(r"\s*(\d+)\s*([MGT]?)i?B?\s*", text, re.IGNORECASE)
    if m is None:
        raise InvalidError(f"{text!r} is not an amount of memory: write MiB, or a number with M, G or T (e.g. 8G)")
    return int(m.group(1)) * {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2).upper()]


def add_parsers(sub):
    p = sub.add_parser("token", help="manage API tokens (who may call the cluster)")
    cmds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = cmds.add_parser("new", help="make a token; its secret is shown only now")
    new.add_argument("--workspace", help="its workspace (default: yours; another needs an admin token)")
    new.add_argument("--name", default="", help="what it is for")
    new.add_argument("--expires-in", type=duration, default=0, help="e.g. 12h or 30d (default: never)")
    role = new.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_true", help="an admin token: manages workspaces and tokens")
    role.add_argument("--worker", action="store_true", help="a worker token, for `ember worker --token-file`")
    new.add_argument("--max-cpu", type=float, default=0, help="a worker token: the most CPU a worker may offer")
    new.add_argument("--max-memory", type=memory_mb, default=0,
                     help="a worker token: the most memory a worker may offer (MiB, or e.g. 64G)")
    new.add_argument("--json", action="store_true", help="print {token_id, token_secret} as JSON (for a file)")
    list_parser(cmds, help="list the tokens you may see (never their secrets)")
    cmds.add_parser("revoke", help="revoke a token: requests with it are refused").add_argument("token_id")
    from .profile import add_token_set_parser  # `token set`: a profile's token, no server needed (profile.py)
    add_token_set_parser(cmds)

    p = sub.add_parser("workspace", help="manage workspaces and their quotas (admin)")
    cmds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    cmds.add_parser("create", help="create a workspace").add_argument("name")
    list_parser(cmds, help="list the workspaces")
    quota = cmds.add_parser("set", help="set a workspace's quotas (0 removes one); work beyond them waits")
    quota.add_argument("name")
    quota.add_argument("--max-containers", type=int)
    quota.add_argument("--max-cpu", type=float)
    quota.add_argument("--max-memory", type=memory_mb, help="MiB, or e.g. 64G")
    quota.add_argument("--max-gpus", type=int)


def _or_dash(value) -> str:
    return value or "-"


def _date(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"


def _token_state(row: dict) -> str:
    if row["revoked_at"]:
        return "revoked"
    return f"expires {_date(row['expires_at'])}" if row["expires_at"] else "active"


TOKEN_COLUMNS = [Column("token_id", "TOKEN ID"), Column("role", "ROLE"), Column("workspace", "WORKSPACE", _or_dash),
                 Column("name", "NAME", _or_dash), Column("created_at", "CREATED", lambda t: f"created {_date(t)}"),
                 Column("state", "STATE", row=_token_state)]
WORKSPACE_COLUMNS = [Column("name", "NAME"), Column("created_at", "CREATED", lambda t: f"created {_date(t)}"),
                     Column("quotas", "QUOTAS", row=lambda row: _quotas(row))]
WORKER_COLUMNS = [Column("name", "NAME"), Column("cpu", "CPU", lambda n: f"{n:g} CPU"),
                  Column("memory_mb", "MEMORY", lambda n: f"{n} MiB"),
                  Column("gpus", "GPUS", lambda g: f"{len(g)} GPUs"),
                  Column("containers", "CONTAINERS", lambda n: f"{n} containers"),
                  Column("labels", "LABELS", lambda d: ",".join(f"{k}={v}" for k, v in sorted(d.items())) or "-"),
                  Column("state", "STATE")]


def run(args) -> int:
    client = Client.from_env()
    rpc = lambda name, req: client.run(client.rpc(name, req))  # noqa: E731
    if args.command == "token":
        return _token(args, rpc)
    if args.command == "workspace":
        return _workspace(args, rpc)
    return _worker(args, rpc)


def _token(args, rpc) -> int:
    if args.action == "new":
        role = Role.ROLE_ADMIN if args.admin else Role.ROLE_WORKER if args.worker else Role.ROLE_WORKSPACE
        resp = rpc("TokenCreate", api_pb2.TokenCreateRequest(
            role=role, workspace=args.workspace or "", name=args.name, expires_in=args.expires_in,
            max_cpu=args.max_cpu, max_memory_mb=args.max_memory))
        if args.json:
            print(json.dumps({"token_id": resp.token.token_id, "token_secret": resp.token_secret}))
        else:
            print(f"token_id: {resp.token.token_id}\ntoken_secret: {resp.token_secret}")
            where = f"workspace {resp.token.workspace}" if resp.token.workspace else "workers"
            print(f"a {Role.Name(role).removeprefix('ROLE_').lower()} token of {where}; the secret is not shown "
                  "again (use it as EMBER_TOKEN_ID and EMBER_TOKEN_SECRET, or `ember token set`)", file=sys.stderr)
    elif args.action == "list":
        tokens = rpc("TokenList", api_pb2.Empty()).tokens
        rows = [{"token_id": t.token_id, "role": Role.Name(t.role).removeprefix("ROLE_").lower(),
                 "workspace": t.workspace or None, "name": t.name or None, "created_at": t.created_at,
                 "expires_at": t.expires_at or None, "revoked_at": t.revoked_at or None} for t in tokens]
        print_rows(rows, TOKEN_COLUMNS, args.json, empty="no tokens")
    else:
        rpc("TokenRevoke", api_pb2.TokenInfo(token_id=args.token_id))
        print(f"revoked token {args.token_id}")
    return 0


def _workspace(args, rpc) -> int:
    if args.action == "create":
        rpc("WorkspaceCreate", api_pb2.WorkspaceRequest(name=args.name))
        print(f"created workspace {args.name}; make it a token with `ember token new --workspace {args.name}`")
    elif args.action == "list":
        rows = [{"name": w.name, "created_at": w.created_at, "max_containers": w.max_containers or None,
                 "max_cpu": w.max_cpu or None, "max_memory_mb": w.max_memory_mb or None, "max_gpus": w.max_gpus or None}
                for w in rpc("WorkspaceList", api_pb2.Empty()).workspaces]
        print_rows(rows, WORKSPACE_COLUMNS, args.json, empty="no workspaces")
    else:
        # 0 on the command line removes a quota: sent as -1 (0 in the message keeps it).
        def arg(value):
            return None if value is None else value if value > 0 else -1
        w = rpc("WorkspaceSet", api_pb2.WorkspaceRequest(
            name=args.name, max_containers=arg(args.max_containers), max_cpu=arg(args.max_cpu),
            max_memory_mb=arg(args.max_memory), max_gpus=arg(args.max_gpus)))
        print(f"{w.name}: {_quotas(w)}")
    return 0


def _quotas(w) -> str:
    """A workspace's quotas (a WorkspaceInfo, or a row of `workspace list`) in words."""
    value = (lambda k: w.get(k)) if isinstance(w, dict) else (lambda k: getattr(w, k))
    parts = [f"{label} {value(key):g}{unit}" for label, key, unit in (
        ("containers", "max_containers", ""), ("CPU", "max_cpu", ""), ("memory", "max_memory_mb", " MiB"),
        ("GPUs", "max_gpus", "")) if value(key)]
    return "quotas: " + (", ".join(parts) if parts else "none")


def _worker(args, rpc) -> int:
    if args.action == "list":
        workers = rpc("WorkerList", api_pb2.Empty()).workers
        rows = []
        for w in workers:
            state = "draining" if w.draining else "connected" if w.connected else "disconnected"
            if w.provisioning:  # asked of a cluster manager (--provisioner): its job, or what became of it
                state = f"{state}, {w.provisioning}" if w.worker_id else w.provisioning
            if w.cordoned_until:
                until = datetime.datetime.fromtimestamp(w.cordoned_until).strftime("%H:%M:%S")
                state += f", cordoned until {until}: {w.cordon_reason}"
            rows.append({"name": w.name, "worker_id": w.worker_id or None, "cpu": w.cpu, "memory_mb": w.memory_mb,
                         "gpus": list(w.gpus), "containers": w.num_containers, "labels": dict(w.labels),
                         "state": state})
        print_rows(rows, WORKER_COLUMNS, args.json, empty="no workers")
        return 0
    if not args.target:
        raise InvalidError(f"`ember worker {args.action}` needs a worker's name (see `ember worker list`)")
    rpc("WorkerDrain" if args.action == "drain" else "WorkerRemove", api_pb2.WorkerRef(name=args.target))
    print(f"worker {args.target}: " + ("draining: it finishes what it runs and takes nothing new"
                                       if args.action == "drain" else "removed"))
    return 0
