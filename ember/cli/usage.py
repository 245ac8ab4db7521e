"""`ember usage [--workspace W] [--since D] [--by app|function] [--json]`: what containers used.

Per workspace (and app, or function): CPU-seconds used, memory GiB-seconds and GPU-seconds
reserved, and inputs run, as the control plane accounts them (ember/server/usage.py). A
workspace token sees its own workspace; an admin token every workspace, or the one it names.
"""

import datetime
import time

from .._client.client import Client
from ..exception import InvalidError
from ..proto import api_pb2
from .identity import duration
from .output import Column, add_json_flag, print_rows

COLUMNS = ("cpu_seconds", "memory_gib_seconds", "gpu_seconds", "inputs")
FIGURES = [Column("cpu_seconds", "CPU-S", "{:.1f}".format),
           Column("memory_gib_seconds", "MEMORY-GIB-S", "{:.1f}".format),
           Column("gpu_seconds", "GPU-S", "{:.1f}".format), Column("inputs", "INPUTS")]


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
    add_json_flag(p)


def run(args) -> int:
    client = Client.from_env()
    rows = client.run(client.rpc("UsageGet", api_pb2.UsageRequest(
        workspace=args.workspace, since=args.since, by=args.by))).rows
    keys = ("workspace",) + {"": (), "app": ("app_name",), "function": ("app_name", "function_name")}[args.by]
    names = [Column(k, k.removesuffix("_name").upper()) for k in keys]
    print_rows([{k: getattr(r, k) for k in keys + COLUMNS} for r in rows], names + FIGURES, args.json,
               empty="no usage recorded")
    return 0
