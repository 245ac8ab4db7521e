"""`ember usage [--workspace W] [--since D] [--by app|function] [--json]`: what containers used.

Per workspace (and app, or function): CPU-seconds used, memory GiB-seconds and GPU-seconds
reserved, and inputs run, as the control plane accounts them (ember/server/usage.py). A
workspace token sees its own workspace; an admin token every workspace, or the one it names.
"""

import datetime
import json
import sys
import time

from .._client.client import Client
from ..exception import InvalidError
from ..proto import api_pb2
from .identity import duration

COLUMNS = ("cpu_seconds", "memory_gib_seconds", "gpu_seconds", "inputs")


def since(text: str) -> float:
    """Unix seconds from a duration back from now ('24h', '7d') or a date ('2025-01-31', '2025-01-31T12:00')."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        pass
    try:
        return time.time() - duration(text)
    except InvalidError:
        raise InvalidError(f"--since {text!r}: give a duration back from now (e.g. 24h, 7d) or a date "
                           "(e.g. 2025-01-31)") from None


def add_parsers(sub):
    p = sub.add_parser("usage", help="what containers used: CPU, memory and GPU time, inputs run")
    p.add_argument("--workspace", default="", help="an admin: this workspace only (default: every one; "
                                                   "a workspace token sees its own)")
    p.add_argument("--since", type=since, default=0.0,
                   help="from this long ago (e.g. 24h, 7d) or this date (kept by the hour; default: all)")
    p.add_argument("--by", choices=("app", "function"), default="", help="one line per app or per function")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args) -> int:
    client = Client.from_env()
    rows = client.run(client.rpc("UsageGet", api_pb2.UsageRequest(
        workspace=args.workspace, since=args.since, by=args.by))).rows
    keys = ("workspace",) + {"": (), "app": ("app_name",), "function": ("app_name", "function_name")}[args.by]
    if args.json:
        print(json.dumps([{k: getattr(r, k) for k in keys + COLUMNS} for r in rows]))
        return 0
    if not rows:
        print("no usage recorded", file=sys.stderr)
        return 0
    print("\t".join([k.removesuffix("_name").upper() for k in keys] + ["CPU-S", "MEMORY-GIB-S", "GPU-S", "INPUTS"]))
    for r in rows:
        print("\t".join([getattr(r, k) for k in keys] + [f"{r.cpu_seconds:.1f}", f"{r.memory_gib_seconds:.1f}",
                                                         f"{r.gpu_seconds:.1f}", str(r.inputs)]))
    return 0
