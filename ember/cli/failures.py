"""`ember app failures NAME|APP_ID` and `ember call retry CALL_ID`: inputs that ended failed
(dead letters), and running them again."""

import json
import sys

from .._client.client import Client
from ..function import _output_value
from ..proto import api_pb2
from .output import Column, print_rows, when

Output = api_pb2.Output


def add_call_parser(sub):
    call = sub.add_parser("call", help="run a call's failed inputs again")
    cmds = call.add_subparsers(dest="action", metavar="ACTION", required=True)
    retry = cmds.add_parser("retry", help="run a call's failed inputs again (one more attempt each, on the current "
                                          "version of its app); print their results",
                            description="Run the failed inputs of a call (see `ember app failures`) again: one "
                                        "more attempt each, on the current version of the call's function. "
                                        "Prints each result; FunctionCall.from_id(CALL_ID).get() returns it too.")
    retry.add_argument("call_id")
    retry.add_argument("--input", type=int, action="append", dest="inputs", metavar="N",
                       help="only input N of the call (again for more); default: every failed one")


def _status(status: int) -> str:
    return Output.Status.Name(status).lower()


def list_failures(client: Client, app: str, as_json: bool) -> int:
    ref = api_pb2.AppRef(app_id=app) if app.startswith("ap-") else api_pb2.AppRef(name=app)
    failures = client.run(client.rpc("AppFailures", ref, what=f"the failures of {app}")).failures
    if as_json:
        print(json.dumps([{
            "call_id": f.call_id, "input": f.idx, "function": f.function_name, "attempts": f.attempts,
            "status": _status(f.status), "error": f.error, "failed_at": f.failed_at,
            "history": [{"attempt": a.attempt, "status": _status(a.status), "error": a.error,
                         "traceback": a.traceback, "container_id": a.container_id, "worker": a.worker, "at": a.at}
                        for a in f.history]} for f in failures], indent=2))
        return 0
    rows = [{"call_id": f.call_id, "input": f.idx, "function": f.function_name, "attempts": f.attempts,
             "failed_at": f.failed_at, "error": f.error.splitlines()[0] if f.error else _status(f.status)}
            for f in failures]
    print_rows(rows, FAILURE_COLUMNS, False, empty=f"no failed inputs in {app}")
    return 0


FAILURE_COLUMNS = [Column("call_id", "CALL"), Column("input", "INPUT"), Column("function", "FUNCTION"),
                   Column("attempts", "ATTEMPTS"), Column("failed_at", "WHEN", when), Column("error", "LAST ERROR")]


def run(args) -> int:
    client = Client.from_env()
    resp = client.run(client.rpc("FunctionCallRetry", api_pb2.FunctionCallRetryRequest(
        call_id=args.call_id, idx=args.inputs or []), what=f"retrying {args.call_id}"))
    print(f"call {args.call_id}: running input{'s' if len(resp.idx) > 1 else ''} "
          f"{', '.join(map(str, resp.idx))} again", file=sys.stderr)
    return client.run(_print_results(client, args.call_id, set(resp.idx), resp.after_seq))


async def _print_results(client: Client, call_id: str, idxs: set[int], after_seq: int) -> int:
    """Wait for the retried inputs' new ends, and print each: its result, or its error."""
    failed = 0
    while idxs:
        resp = await client.rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
            call_id=call_id, after_seq=after_seq, max_outputs=1000, timeout=50.0), what=f"getting {call_id}")
        for co in resp.outputs:
            after_seq = co.seq
            out = co.output
            if out.status == Output.GENERATOR_ITEM or out.idx not in idxs:
                continue
            idxs.discard(out.idx)
            try:
                value = await _output_value(client, out, resp.function_name)
            except Exception as e:  # noqa: BLE001 - its error, or a result that cannot be read here
                if out.status == Output.SUCCESS:
                    print(f"input {out.idx} succeeded, but its result cannot be read here: {e}")
                else:
                    failed += 1
                    print(f"input {out.idx} failed again: {type(e).__name__}: {e}")
            else:
                print(f"input {out.idx}: {value!r}")
    return 1 if failed else 0
