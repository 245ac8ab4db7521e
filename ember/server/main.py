"""`ember server`: run the control plane until SIGTERM or SIGINT."""

import asyncio
import dataclasses
import logging
import os
import pathlib
import shlex
import signal
import sys

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .. import exception
from ..config import SERVER_OPTIONS
from ..proto import api_pb2_grpc
from . import gateway, tls
from .api import ClientService, ContainerService, WorkerService
from .blob_gc import BlobCollector
from .blobs import BlobStore, BlobStoreError, open_blob_store
from .breaker import Breaker
from .dashboard import Dashboard
from .leader import Leadership, Standby
from .metrics import Metrics
from .provisioner import ProvisionerConfig, Provisioner, Shape, open_backend
from .refusals import Refusals
from .scheduler import Scheduler
from .secrets import Secrets
from .store import Store, StoreError, StoreUnavailable, describe_url, open_store
from .tokens import ProxyTokens
from .transport import FrameServer
from .tunnels import Tunnels

log = logging.getLogger("ember.server")


@dataclasses.dataclass
class GcPolicy:
    """What the blob collector keeps, for how long (blob_gc.py; seconds)."""
    blob_retention: float = 3600.0
    layer_grace: float = 7 * 86400.0
    volume_versions: int = 3
    interval: float = 600.0

DEFAULT_HTTP = "127.0.0.1:8600"
DEFAULT_DASHBOARD_PORT = 8601
TICK = 0.2            # seconds between time-driven checks (expiry, scale-down, backlog)
EXPIRE_EVERY = 60.0   # seconds between sweeps of expired outputs


async def serve(address: str, data_dir: pathlib.Path, *, lease_timeout: float, worker_timeout: float,
                app_timeout: float, output_retention: float, log_retention: float = 24 * 3600,
                gc: GcPolicy | None = None, http: str | None = None, web_url: str | None = None,
                dashboard: str | None = None, dashboard_url: str | None = None, ready_file: str | None = None,
                server_tls: tls.ServerTLS | None = None,
                breaker: Breaker | None = None, provisioning: ProvisionerConfig | None = None,
                blobs: BlobStore | None = None, leader_lease: float = 0, advertise_url: str | None = None,
                database_url: str | None = None, again: bool = False, frames_port: int = 0) -> bool:
    """Serve until stopped. With a leader lease (several control planes on one database), stand
    by until this one leads; True if it stepped down later (it lost the lease: serve again, with
    again=True: then a database that cannot be reached now is waited for)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = await _open_store(database_url or data_dir / "ember.db", stop, wait=again)
    if store is None:
        return False
    leadership = None
    if leader_lease:
        leadership = Leadership(store, advertise_url or "", leader_lease)
        address = await _stand_by(leadership, address, server_tls, stop)
        if stop.is_set():
            store.close()
            return False
    sched = Scheduler(store, lease_timeout=lease_timeout, worker_timeout=worker_timeout,
                      app_timeout=app_timeout, output_retention=output_retention,
                      log_retention=log_retention, breaker=breaker)
    sched.recover()
    for path in sched.identity.bootstrap(data_dir):
        print(f"ember server: wrote the first {path.stem.replace('-', ' ')} to {path} (keep it secret)", flush=True)
    tokens = ProxyTokens(store)
    # Unless told where, the gateway takes the default port, or any free one if that is taken.
    http_host, _, http_port = _http_address(http).rpartition(":")
    sock = gateway.bind(http_host, int(http_port), fallback=http is None)
    serving = asyncio.Event()  # set once the gRPC services answer

    def readiness() -> str | None:
        if not serving.is_set():
            return "the control plane is starting"
        if leadership and not leadership.acting():
            return "this control plane does not hold the leader lease (it steps down)"
        return None
    # The dashboard has a port (an origin) of its own: pages of web endpoints and sandboxes' tunnels,
    # which users write, are served by the gateway's, and a script of theirs must not read a page
    # of a browser's dashboard session or act in it (a page of another origin can do neither).
    dash_host, _, dash_port = _dashboard_address(dashboard, http_host).rpartition(":")
    dash_sock = gateway.bind(dash_host, int(dash_port), fallback=dashboard is None, flag="--dashboard")
    scheme = "https" if server_tls else "http"
    sched.routes.base_url = (web_url or f"{scheme}://{gateway.url_host(http_host)}:{sock.getsockname()[1]}").rstrip("/")
    sched.routes.dashboard_url = (dashboard_url or f"{scheme}://{gateway.url_host(dash_host)}:"
                                                   f"{dash_sock.getsockname()[1]}").rstrip("/")
    site = Dashboard(sched, secure_cookies=server_tls is not None)
    web = gateway.Gateway(sched.routes, sched.dispatch, tokens, metrics=Metrics(sched, site),
                          readiness=readiness, tunnels=Tunnels(sched.sandboxes, sched.fleet.execs, sched.identity))
    web_task, web_server = await gateway.start(web, sock, server_tls)
    dash_task, dash_server = await gateway.start(site, dash_sock, server_tls)
    # Refusals answers a request that breaks validate.py's rules, or does not parse, with
    # INVALID_ARGUMENT, for every service registered below.
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[Refusals()])
    if leadership:
        sched.dispatch.acting = leadership.acting
    blobs = blobs or open_blob_store(data_dir / "blobs")
    gc = gc or GcPolicy()
    collector = BlobCollector(store, blobs, sched, blob_retention=gc.blob_retention, layer_grace=gc.layer_grace,
                              volume_versions=gc.volume_versions)
    sched.placement.on_volumes = collector.hold
    secrets = Secrets(store, data_dir / "secret.key")
    clients = ClientService(sched, blobs, secrets, tokens, heartbeat_interval=app_timeout / 4)
    api_pb2_grpc.add_ClientApiServicer_to_server(clients, server)
    api_pb2_grpc.add_WorkerApiServicer_to_server(WorkerService(sched, blobs, clients.frames_endpoint), server)
    containers = ContainerService(sched, blobs, secrets, clients.frames_endpoint)
    api_pb2_grpc.add_ContainerApiServicer_to_server(containers, server)
    healthy = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(healthy, server)
    bound = _listen(server, address, server_tls)
    await server.start()
    frames = FrameServer(clients, containers)
    if address.startswith("unix:"):
        clients.transport_unix_path = await frames.start_unix(address[5:].removeprefix("//"))
    else:
        clients.transport_port = await frames.start(address.rpartition(":")[0], frames_port, server_tls)
    await healthy.set("", health_pb2.HealthCheckResponse.SERVING)
    serving.set()
    state = f"state in {describe_url(database_url)}, " if database_url else ""
    print(f"ember server listening on {bound}, web endpoints at {sched.routes.base_url}, the dashboard at "
          f"{sched.routes.dashboard_url}/ ({state}data in {data_dir})", flush=True)
    if ready_file:
        pathlib.Path(ready_file).write_text(bound)
    provisioner = None
    if provisioning and provisioning.kind != "none":
        sched.provisioner = _provisioner(provisioning, sched, bound, server_tls)
        provisioner = asyncio.create_task(sched.provisioner.run())

    async def ticker():
        since_expire = EXPIRE_EVERY
        while True:
            await asyncio.sleep(TICK)
            if leadership and not leadership.acting():
                await healthy.enter_graceful_shutdown()  # NOT_SERVING from now on
                continue  # it steps down now: nothing time-driven starts
            try:
                sched.tick()
                since_expire += TICK
                if since_expire >= EXPIRE_EVERY:
                    since_expire = 0
                    sched.ledger.expire()
            except Exception:
                log.exception("periodic check failed")

    async def collections():
        while True:
            await asyncio.sleep(gc.interval)
            try:
                await collector.collect()
            except Exception:
                log.exception("blob collection failed")

    ticks = asyncio.create_task(ticker())
    collecting = asyncio.create_task(collections())
    ends = [asyncio.create_task(stop.wait())]
    if leadership:
        ends += [asyncio.create_task(leadership.lost.wait()), asyncio.create_task(leadership.keep())]
    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
    stepped_down = leadership is not None and leadership.lost.is_set()
    for task in ends:
        task.cancel()
    ticks.cancel()
    collecting.cancel()
    if provisioner:
        provisioner.cancel()  # its workers go on, and a restarted control plane follows them again
    sched.fleet.closing = True  # the streams that close now say nothing of workers and containers
    web_server.should_exit = dash_server.should_exit = True
    # One that lost its lease drops its streams at once: its clients and workers go to the new leader.
    await frames.stop()
    await server.stop(grace=0 if stepped_down else 1.0)
    await asyncio.gather(web_task, dash_task)
    if not stepped_down:
        sched.usage.flush()
        if leadership:
            store.commit()
            leadership.release()
    try:
        store.close()
    except StoreUnavailable as e:  # cut off from it: what it did not commit is the next leader's to redo
        log.warning("closing the store: %s", e)
    return stepped_down


async def _open_store(target, stop: asyncio.Event, *, wait: bool) -> Store | None:
    """The store; with wait, one that cannot be reached now (this control plane stepped down, cut
    off from it) is tried again every second until it can be, or until stop (then None)."""
    said = False
    while True:
        try:
            return open_store(target)
        except StoreUnavailable as e:
            if not wait:
                raise exception.InvalidError(f"{e} (--database-url)") from None
            if not said:
                log.warning("%s: trying again every second, to stand by", e)
                said = True
        except StoreError as e:
            raise exception.InvalidError(f"{e} (--database-url)" if isinstance(target, str) else str(e)) from None
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
            return None
        except TimeoutError:
            pass


def _listen(server: grpc.aio.Server, address: str, server_tls: tls.ServerTLS | None) -> str:
    """Add the listening port to a gRPC server; the URL it is reached at."""
    if address.startswith("unix:"):
        # A unix socket stays plaintext (clients of unix: URLs speak no TLS): only this machine
        # reaches it, through its file's permissions. TLS, if any, is for the gateway then.
        pathlib.Path(address[5:].removeprefix("//")).unlink(missing_ok=True)
        server.add_insecure_port(address)
        return address
    host = address.rpartition(":")[0]
    if server_tls:
        creds = grpc.ssl_server_credentials([server_tls.key_and_chain()])
        return f"https://{host}:{server.add_secure_port(address, creds)}"
    return f"{host}:{server.add_insecure_port(address)}"


async def _stand_by(leadership: Leadership, address: str, server_tls: tls.ServerTLS | None,
                    stop: asyncio.Event) -> str:
    """Answer every request with where the leader is until this control plane takes the lease
    (or is stopped); the address to serve on then (its port, if it was 0, is the one taken)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    standby_health = health.aio.HealthServicer()
    await standby_health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(standby_health, server)
    server.add_generic_rpc_handlers((Standby(leadership),))
    bound = _listen(server, address, server_tls)
    await server.start()
    leadership.url = leadership.url or bound
    if not address.startswith("unix:"):
        address = f"{address.rpartition(':')[0]}:{bound.rpartition(':')[2]}"
    print(f"ember server on {bound} with a leader lease of {leadership.lease:g}s: standing by until it leads",
          flush=True)
    standing = asyncio.create_task(leadership.wait_to_lead())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([standing, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    await server.stop(grace=0)
    if stop.is_set():
        standing.cancel()
    else:
        standing.result()  # it leads now (or what kept it from leading is raised)
    return address


def reachable_url(bound: str) -> str:
    """The control plane's bound address as other machines reach it: listening on every address
    (0.0.0.0), at this machine's name (gateway.url_host), not at 0.0.0.0, which is this machine only."""
    scheme, sep, rest = bound.rpartition("://")
    if rest.startswith("unix:"):
        return bound
    host, _, port = rest.rpartition(":")
    return f"{scheme}{sep}{gateway.url_host(host)}:{port}"


def _provisioner(cfg: ProvisionerConfig, sched: Scheduler, bound: str,
                 server_tls: tls.ServerTLS | None) -> Provisioner:
    url = cfg.server_url or reachable_url(bound)
    log.info("provisioner %s: up to %d workers for the control plane at %s", cfg.kind, cfg.max_workers, url)
    host = url.removeprefix("https://").removeprefix("http://").rpartition(":")[0]
    if url.startswith("unix:") or tls.is_loopback(host):
        log.warning("provisioned workers reach the control plane at %s, which only this machine can reach: pass "
                    "--worker-server-url with an address their nodes reach", url)
    return Provisioner(open_backend(cfg), sched.fleet, sched.apps, sched.placement, sched.builds,
                       sched.identity,
                       max_workers=cfg.max_workers, server_url=url, floor=cfg.floor, idle_window=cfg.idle_window,
                       start_timeout=cfg.start_timeout, worker_backend=cfg.worker_backend, command=cfg.command,
                       env=cfg.env,
                       ca_file=str(server_tls.ca_file) if server_tls and server_tls.ca_file else "")


def _provisioning(args, data_dir: pathlib.Path) -> ProvisionerConfig:
    """The provisioner the flags ask for, after checking them."""
    if args.provisioner == "none":
        return ProvisionerConfig()
    if args.max_workers < 1:
        raise exception.InvalidError(f"--provisioner {args.provisioner} needs --max-workers N (N at least 1): the "
                                     "most workers it may ask for at once")
    if args.worker_cpu < 1 or args.worker_memory < 64:
        raise exception.InvalidError("--worker-cpu takes a whole number of CPUs, at least 1, and --worker-memory at "
                                     "least 64 (MiB)")
    if args.worker_idle <= 0 or args.worker_start_timeout <= 0:
        raise exception.InvalidError("--worker-idle and --worker-start-timeout must be more than 0 (e.g. 5m)")
    if args.provisioner == "kubernetes" and not args.kubernetes_image:
        raise exception.InvalidError("--provisioner kubernetes needs --kubernetes-image IMAGE: an image with Ember "
                                     "installed, which the workers' pods run (see deploy/kubernetes/)")
    env = {}
    for item in args.worker_env:
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise exception.InvalidError(f"--worker-env {item!r}: pass KEY=VALUE, e.g. EMBER_CACHE_DIR=/scratch/ember")
        env[key] = value
    output = args.slurm_output or str(data_dir / "provisioner")
    if args.provisioner == "slurm" and not args.slurm_output:
        pathlib.Path(output).mkdir(parents=True, exist_ok=True)
    if args.worker_command:
        command = tuple(shlex.split(args.worker_command))
    elif args.provisioner == "kubernetes":
        command = ("ember",)  # the image's
    else:
        command = (sys.executable, "-m", "ember.cli.main")  # this installation, as a shared filesystem has it
    return ProvisionerConfig(
        kind=args.provisioner, max_workers=args.max_workers, server_url=args.worker_server_url or "",
        floor=Shape(args.worker_cpu, args.worker_memory), idle_window=args.worker_idle,
        start_timeout=args.worker_start_timeout, worker_backend=args.worker_backend, command=command, env=env,
        slurm_partition=args.slurm_partition or "", slurm_args=tuple(args.slurm_arg), slurm_output_dir=output,
        kubernetes_namespace=args.kubernetes_namespace, kubernetes_image=args.kubernetes_image or "")


def _http_address(http: str | None) -> str:
    return http or os.environ.get("EMBER_HTTP") or DEFAULT_HTTP


def _dashboard_address(dashboard: str | None, http_host: str) -> str:
    """HOST:PORT of the dashboard: as given, else the gateway's host and port 8601 (or a free one)."""
    return dashboard or os.environ.get("EMBER_DASHBOARD") or f"{http_host}:{DEFAULT_DASHBOARD_PORT}"


def _server_tls(args, address: str, data_dir: pathlib.Path) -> tls.ServerTLS | None:
    """The TLS the flags ask for (None: plaintext), after checking that plaintext listens only
    on loopback and unix sockets, or that --insecure says otherwise."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise exception.InvalidError("--tls-cert and --tls-key go together: pass both (the certificate chain and "
                                     "its private key, PEM files), or `--tls auto` for a certificate made here")
    if args.tls and args.tls_cert:
        raise exception.InvalidError("pass either `--tls auto` or --tls-cert and --tls-key, not both")
    http_host = _http_address(args.http).rpartition(":")[0]
    hosts = [http_host, _dashboard_address(args.dashboard, http_host).rpartition(":")[0]]
    if not address.startswith("unix:"):
        hosts.insert(0, address.rpartition(":")[0])
    if args.tls_cert:
        given = tls.ServerTLS(pathlib.Path(args.tls_cert).expanduser(), pathlib.Path(args.tls_key).expanduser())
        given.key_and_chain()  # unreadable files fail now, before anything starts
        return given
    if args.tls == "auto":
        server_tls = tls.auto(data_dir / "tls", hosts)
        print(f"ember server: TLS with its own CA; clients trust it with EMBER_CA_CERT={server_tls.ca_file} "
              f"(SHA-256 fingerprint {tls.fingerprint(server_tls.ca_file)})", flush=True)
        return server_tls
    exposed = [h for h in hosts if not tls.is_loopback(h)]
    if exposed and not args.insecure:
        raise exception.InvalidError(
            f"the server would listen on {exposed[0]} without TLS, so tokens and data would cross the network in "
            "the clear: pass `--tls auto` (a CA and certificate made and kept in the data dir), `--tls-cert FILE "
            "--tls-key FILE`, or `--insecure` to listen without TLS anyway (behind a TLS proxy, say)")
    if exposed:
        log.warning("listening on %s WITHOUT TLS (--insecure): anyone on the network can read and forge its "
                    "traffic", ", ".join(exposed))
    return None


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s server %(levelname)s %(message)s")
    address = args.address or f"{args.host}:{args.port}"
    data_dir = pathlib.Path(args.data_dir).expanduser()
    server_tls = _server_tls(args, address, data_dir)
    if args.volume_versions < 1:
        raise exception.InvalidError(f"--volume-versions must be at least 1, the current version (got "
                                     f"{args.volume_versions})")
    if args.gc_interval <= 0:
        raise exception.InvalidError("--gc-interval must be more than 0 (e.g. 10m)")
    gc = GcPolicy(blob_retention=args.blob_retention, layer_grace=args.layer_grace,
                  volume_versions=args.volume_versions, interval=args.gc_interval)
    if args.cordon_after < 0 or args.cordon_after and (args.cordon_window <= 0 or args.cordon_cooldown <= 0):
        raise exception.InvalidError("--cordon-after takes a count of 0 (never cordon) or more, and --cordon-window "
                                     "and --cordon-cooldown durations above 0 (e.g. 5m)")
    if not 0 <= args.frames_port <= 65535:
        raise exception.InvalidError(f"--frames-port {args.frames_port}: give a TCP port, 1 to 65535, or 0 (any "
                                     "free one)")
    if args.leader_lease < 0 or 0 < args.leader_lease < 1:
        raise exception.InvalidError(f"--leader-lease takes 0 (the only control plane on its database) or at least "
                                     f"1 second, e.g. 3 (got {args.leader_lease:g})")
    if args.leader_lease and not args.advertise_url and address.rpartition(":")[0].strip("[]") in ("0.0.0.0", "::", ""):
        raise exception.InvalidError(f"--leader-lease on {address}: the other control planes name this one to clients "
                                     "and workers, and a wildcard address reaches nothing; pass --advertise-url "
                                     "HOST:PORT (how they reach it)")

    provisioning = _provisioning(args, data_dir)
    try:
        blobs = open_blob_store(args.blob_url) if args.blob_url else None
    except BlobStoreError as e:
        raise exception.InvalidError(f"--blob-url: {e}") from None

    async def main():
        # A control plane that steps down (it lost its lease) stands by again, in the same process.
        again = False
        while again := await serve(address, data_dir, again=again,
                          lease_timeout=args.lease_timeout, worker_timeout=args.worker_timeout,
                          app_timeout=args.app_timeout, output_retention=args.output_retention * 3600,
                          log_retention=args.log_retention * 3600, gc=gc,
                          http=args.http, web_url=args.web_url, dashboard=args.dashboard,
                          dashboard_url=args.dashboard_url, ready_file=args.ready_file, server_tls=server_tls,
                          breaker=Breaker(args.cordon_after, args.cordon_window, args.cordon_cooldown),
                          provisioning=provisioning, blobs=blobs, leader_lease=args.leader_lease,
                          advertise_url=args.advertise_url, database_url=args.database_url,
                          frames_port=args.frames_port):
            pass
    uvloop.run(main())
    return 0
