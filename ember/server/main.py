"""`ember server`: run the control plane until SIGTERM or SIGINT."""

import asyncio
import logging
import os
import pathlib
import signal
import sys

import grpc
import uvloop

from ..config import GRPC_OPTIONS
from ..proto import api_pb2_grpc
from . import gateway
from .api import ClientService, ContainerService, WorkerService
from .blobs import open_blob_store
from .refusals import Refusals
from .scheduler import Scheduler
from .secrets import Secrets
from .store import open_store
from .tokens import ProxyTokens

log = logging.getLogger("ember.server")

DEFAULT_HTTP = "127.0.0.1:8600"
TICK = 0.2            # seconds between time-driven checks (expiry, scale-down, backlog)
EXPIRE_EVERY = 60.0   # seconds between sweeps of expired outputs


async def serve(address: str, data_dir: pathlib.Path, *, lease_timeout: float, worker_timeout: float,
                app_timeout: float, output_retention: float, http: str | None = None, web_url: str | None = None,
                ready_file: str | None = None):
    data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(data_dir / "ember.db")
    sched = Scheduler(store, lease_timeout=lease_timeout, worker_timeout=worker_timeout,
                      app_timeout=app_timeout, output_retention=output_retention)
    sched.recover()
    tokens = ProxyTokens(store)
    # Unless told where, the gateway takes the default port, or any free one if that is taken.
    http_host, _, http_port = (http or os.environ.get("EMBER_HTTP") or DEFAULT_HTTP).rpartition(":")
    sock = gateway.bind(http_host, int(http_port), fallback=http is None)
    web_task, web_server = await gateway.start(gateway.Gateway(sched.routes, sched.dispatch, tokens), sock)
    sched.routes.base_url = (web_url or f"http://{http_host}:{sock.getsockname()[1]}").rstrip("/")
    # Refusals answers a request that breaks validate.py's rules, or does not parse, with
    # INVALID_ARGUMENT, for every service registered below.
    server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=[Refusals()])
    blobs = open_blob_store(data_dir / "blobs")
    secrets = Secrets(store, data_dir / "secret.key")
    api_pb2_grpc.add_ClientApiServicer_to_server(
        ClientService(sched, blobs, secrets, tokens, heartbeat_interval=app_timeout / 4), server)
    api_pb2_grpc.add_WorkerApiServicer_to_server(WorkerService(sched, blobs), server)
    api_pb2_grpc.add_ContainerApiServicer_to_server(ContainerService(sched, blobs, secrets), server)
    if address.startswith("unix:"):
        pathlib.Path(address[5:].removeprefix("//")).unlink(missing_ok=True)
        server.add_insecure_port(address)
        bound = address
    else:
        host = address.rpartition(":")[0]
        bound = f"{host}:{server.add_insecure_port(address)}"
    await server.start()
    print(f"ember server listening on {bound}, web endpoints at {sched.routes.base_url} (data in {data_dir})",
          flush=True)
    if ready_file:
        pathlib.Path(ready_file).write_text(bound)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def ticker():
        since_expire = EXPIRE_EVERY
        while True:
            await asyncio.sleep(TICK)
            try:
                sched.tick()
                since_expire += TICK
                if since_expire >= EXPIRE_EVERY:
                    since_expire = 0
                    sched.ledger.expire()
            except Exception:
                log.exception("periodic check failed")

    ticks = asyncio.create_task(ticker())
    await stop.wait()
    ticks.cancel()
    web_server.should_exit = True
    await server.stop(grace=1.0)
    await web_task
    store.close()


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s server %(levelname)s %(message)s")
    address = args.address or f"{args.host}:{args.port}"
    uvloop.run(serve(address, pathlib.Path(args.data_dir).expanduser(),
                      lease_timeout=args.lease_timeout, worker_timeout=args.worker_timeout,
                      app_timeout=args.app_timeout, output_retention=args.output_retention * 3600,
                      http=args.http, web_url=args.web_url, ready_file=args.ready_file))
    return 0
