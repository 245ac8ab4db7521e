"""`ember`: run apps, and start the control plane and workers. A failure is reported as errors.py says."""

import argparse
import os
import sys

from .. import __version__, exception
from .._proc import die_with_parent
from .. import config
from ..config import ember_home
from .errors import report
from .output import add_verbose_flag


ENV_HELP = "Modal's environment: Ember has none (workspaces, chosen by the token, are its namespaces)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ember",
                                description="Ember: run Python functions in containers on your own machines.")
    p.add_argument("--version", action="version", version=f"ember {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run an app: its local entrypoint, or one function",
                         description="Run FILE's local entrypoint, or FILE::NAME (an entrypoint or a "
                                     "function; its arguments as --name value). Without EMBER_SERVER_URL, "
                                     "a local cluster starts for the run.")
    run.add_argument("target", help="FILE or FILE::NAME")
    run.add_argument("-e", "--env", help=ENV_HELP)
    add_verbose_flag(run)
    run.add_argument("args", nargs=argparse.REMAINDER, help="--name value for the function's parameters")

    serve = sub.add_parser("serve", help="run an app with its web endpoints live; redeploy it on every save",
                           description="Run FILE's app with its web endpoints served (at URLs that stay the "
                                       "same), watch its files, and redeploy it when one changes. Ctrl-C stops it.")
    serve.add_argument("file", help="the app's file")
    serve.add_argument("-e", "--env", help=ENV_HELP)
    add_verbose_flag(serve)

    server = sub.add_parser(
        "server", help="run the control plane",
        description="Run the control plane. Its database and blobs live under --data-dir. When that disk is "
                    "full, what cannot be written fails with RESOURCE_EXHAUSTED (ResourceExhaustedError in the "
                    "SDK), naming the directory and the room left; what it accepted before is kept, and it takes "
                    "writes again by itself once there is room (no restart).")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=7070)
    server.add_argument("--address", help="bind address instead of host:port, e.g. unix:/run/ember.sock")
    server.add_argument("--data-dir", default=str(ember_home() / "server"),
                        help="where its state lives (default: $EMBER_HOME/server, else ~/.ember/server); "
                             "see above for a full disk")
    server.add_argument("--database-url", default=os.environ.get("EMBER_DATABASE_URL"), metavar="URL",
                        help="keep durable state in PostgreSQL, postgresql://USER:PASSWORD@HOST/DATABASE "
                             "(default: $EMBER_DATABASE_URL, else SQLite in --data-dir); the password may come "
                             "from PGPASSWORD or ~/.pgpass instead")
    server.add_argument("--blob-url", metavar="s3://BUCKET/PREFIX",
                        help="keep blobs (large arguments and results, layer archives, volume files) in an "
                             "S3-compatible bucket instead of under --data-dir; its endpoint and keys come from "
                             "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_REGION). Clients "
                             "and workers then move large blobs to and from the bucket directly, through presigned "
                             "URLs: they must reach its endpoint too")
    server.add_argument("--lease-timeout", type=float, default=15.0,
                        help="seconds without contact before a container's inputs return to the queue (a "
                             "container whose connection and worker's connection closed returns them at once)")
    server.add_argument("--worker-timeout", type=float, default=30.0,
                        help="seconds a disconnected or silent worker is waited for before its containers count "
                             "as lost")
    server.add_argument("--app-timeout", type=float, default=30.0,
                        help="seconds without a client heartbeat before an ephemeral app is stopped")
    server.add_argument("--output-retention", type=float, default=24.0,
                        help="hours a finished call's outputs are kept")
    server.add_argument("--log-retention", type=float, default=24.0,
                        help="hours apps' log lines are kept (what `ember app logs` shows after they stopped)")
    server.add_argument("--blob-retention", type=_duration, default="1h", metavar="DURATION",
                        help="how long a blob nothing refers to is kept: large arguments and results beyond their "
                             "call's outputs, and a fresh upload not yet referenced (default 1h)")
    server.add_argument("--layer-grace", type=_duration, default="7d", metavar="DURATION",
                        help="how long an image layer that no live app uses is kept after a build last used it "
                             "(default 7d)")
    server.add_argument("--volume-versions", type=int, default=3, metavar="N",
                        help="versions of each volume whose files are kept: the newest N (default 3)")
    server.add_argument("--gc-interval", type=_duration, default="10m", metavar="DURATION",
                        help="time between collections of unreferenced blobs (default 10m)")
    server.add_argument("--cordon-after", type=int, default=5, metavar="N",
                        help="cordon a worker after N of its containers fail (crash, are killed, cannot start; "
                             "not a user exception) within --cordon-window; 0: never (default: 5)")
    server.add_argument("--cordon-window", type=_duration, default=300.0, metavar="DURATION",
                        help="the window --cordon-after counts in, e.g. 90s or 5m (default: 5m)")
    server.add_argument("--cordon-cooldown", type=_duration, default=300.0, metavar="DURATION",
                        help="how long a cordoned worker takes no new containers before it is tried again "
                             "(default: 5m)")
    server.add_argument("--http", help="HOST:PORT of the HTTP gateway that serves web endpoints (port 0: any "
                                       "free one; default: $EMBER_HTTP, else 127.0.0.1:8600 or a free port)")
    server.add_argument("--web-url", help="the gateway's URL as clients reach it, if not http://HOST:PORT "
                                          "(behind a proxy, say; for HOST 0.0.0.0, this machine's host name)")
    server.add_argument("--dashboard", help="HOST:PORT of the web dashboard, an origin apart from the gateway's "
                                            "(port 0: any free one; default: $EMBER_DASHBOARD, else the gateway's "
                                            "host and port 8601, or a free port)")
    server.add_argument("--dashboard-url", help="the dashboard's URL as browsers reach it, if not http://HOST:PORT")
    server.add_argument("--frames-port", type=int, default=0, metavar="PORT",
                        help="the port of the frame transport (dict and queue operations on plain frames, on "
                             "gRPC's host, with its TLS; clients that cannot reach it use gRPC); default 0: any "
                             "free one (fix one to open it in a firewall)")
    server.add_argument("--ready-file", help="write the bound address to this file once serving")
    server.add_argument("--leader-lease", type=float, default=0.0, metavar="SECONDS",
                        help="several control planes on one database: each takes part with this flag, one leads "
                             "through a lease of SECONDS (renewed every third of it; e.g. 3), the others stand by "
                             "and take over once it expires; 0: this is the only one (default)")
    server.add_argument("--advertise-url", metavar="URL",
                        help="with --leader-lease: where clients and workers reach this control plane, as the "
                             "others name it to them (default: its listening address)")
    server.add_argument("--tls", choices=("auto",),
                        help="serve TLS (gRPC and the HTTP gateway) with a CA and certificate made once and kept in "
                             "the data dir; it prints the CA file clients trust (EMBER_CA_CERT)")
    server.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    server.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    server.add_argument("--insecure", action="store_true",
                        help="allow listening beyond loopback without TLS (it is refused otherwise)")

    prov = server.add_argument_group("provisioning workers", "where worker machines come from (README: Provisioners)")
    prov.add_argument("--provisioner", choices=("none", "slurm", "kubernetes"), default="none",
                      help="ask a cluster manager for workers when queued work has no room on the connected ones, "
                           "and let them go when idle; none: workers are started by hand (default)")
    prov.add_argument("--max-workers", type=int, default=0, metavar="N",
                      help="the most workers the provisioner asks for at once (needed with --provisioner)")
    prov.add_argument("--worker-cpu", type=int, default=1, metavar="N",
                      help="the least CPUs a provisioned worker asks for (more if a container needs more; default 1)")
    prov.add_argument("--worker-memory", type=int, default=1024, metavar="MiB",
                      help="the least memory a provisioned worker asks for (default 1024)")
    prov.add_argument("--worker-idle", type=_duration, default="5m", metavar="DURATION",
                      help="how long a provisioned worker runs no container before it is let go (default 5m)")
    prov.add_argument("--worker-start-timeout", type=_duration, default="10m", metavar="DURATION",
                      help="how long a provisioned worker may take to connect before its job is cancelled and "
                           "reported as failed (default 10m)")
    prov.add_argument("--worker-backend", choices=("auto", "container", "process"), default="auto",
                      help="the --backend of provisioned workers (default auto)")
    prov.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                      help="an environment variable of provisioned workers, repeatable, e.g. "
                           "EMBER_CACHE_DIR=/scratch/ember (they get none of the control plane's)")
    prov.add_argument("--worker-command", metavar="CMD",
                      help="how a provisioned worker runs `ember` (default for Slurm: this control plane's Python, "
                           "-m ember.cli.main; for Kubernetes: ember, in --kubernetes-image)")
    prov.add_argument("--worker-server-url", metavar="URL",
                      help="the control plane's URL as provisioned workers reach it (default: where it listens; "
                           "for --host 0.0.0.0, at this machine's host name)")
    prov.add_argument("--slurm-partition", metavar="P", help="the partition of the workers' jobs (default: Slurm's)")
    prov.add_argument("--slurm-arg", action="append", default=[], metavar="ARG",
                      help="an sbatch option for every worker job, repeatable, e.g. --slurm-arg=--account=ml "
                           "--slurm-arg=--time=8:00:00")
    prov.add_argument("--slurm-output", metavar="DIR",
                      help="where the jobs' output files go (default: <data-dir>/provisioner; a path the nodes see)")
    prov.add_argument("--kubernetes-namespace", default="default", metavar="NS",
                      help="the namespace of the workers' pods (default: default)")
    prov.add_argument("--kubernetes-image", metavar="IMAGE", help="the image of the workers' pods (with Ember)")

    worker = sub.add_parser("worker", help="run a worker that starts containers; or list, drain or remove workers",
                            description="Without ACTION: run a worker on this machine. `ember worker list`, "
                                        "`ember worker drain NAME` (finish what it runs, take nothing new) and "
                                        "`ember worker remove NAME` manage the workers that joined (admin).")
    worker.add_argument("action", nargs="?", choices=("list", "drain", "remove"), help=argparse.SUPPRESS)
    worker.add_argument("target", nargs="?", help=argparse.SUPPRESS)
    worker.add_argument("--json", action="store_true", help="with list: print the workers as JSON (for scripts)")
    worker.add_argument("--server", help="control plane URL, or several separated by commas (control planes on one "
                        "database, of which one leads: see `ember server --leader-lease`; default: $EMBER_SERVER_URL)")
    worker.add_argument("--data-dir", default=str(ember_home() / "worker"),
                        help="where its state lives (default: $EMBER_HOME/worker, else ~/.ember/worker)")
    worker.add_argument("--cpu", type=float, help="cores to offer (default: all)")
    worker.add_argument("--memory", type=int, help="MiB to offer (default: all)")
    worker.add_argument("--name", help="worker name (default: host name)")
    worker.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label it registers with, repeatable; region=NAME: functions with region=NAME "
                             "run only on workers labelled so")
    worker.add_argument("--token-file", help="its worker token, as `ember token new --worker --json` writes it "
                                             "(default: $EMBER_WORKER_TOKEN_FILE)")
    worker.add_argument("--backend", choices=("auto", "container", "process"), default="auto",
                        help="how containers run: isolated (Linux, root) or as plain processes "
                             "(default: container where possible)")
    worker.add_argument("--warm-parents", choices=("on", "off"), default="on",
                        help="cold starts fork from a process with the function's code imported, where that is "
                             "sound (default: on)")
    worker.add_argument("--cache-dir", default=os.environ.get("EMBER_CACHE_DIR"),
                        help="image layers and build caches; workers on one machine may share it "
                             "(default: $EMBER_CACHE_DIR, else the data dir)")
    from .apps import add_parsers as add_app_parsers
    from .containers import add_parsers as add_container_parsers
    from .failures import add_call_parser
    from .identity import add_parsers as add_identity_parsers
    from .objects import add_parsers as add_object_parsers
    from .profile import add_parsers as add_profile_parsers
    from .sandboxes import add_parsers as add_sandbox_parsers
    from .usage import add_parsers as add_usage_parsers
    add_app_parsers(sub)
    add_container_parsers(sub)
    add_sandbox_parsers(sub)
    add_call_parser(sub)
    add_object_parsers(sub)
    add_identity_parsers(sub)
    add_profile_parsers(sub)
    add_usage_parsers(sub)
    return p


def _duration(text: str) -> float:
    """An argument in seconds: '90', '90s', '5m', '1h'."""
    from .identity import duration
    try:
        return duration(text)
    except exception.InvalidError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    parent = os.environ.pop("EMBER_PARENT_PID", None)
    if args.command == "server" or (args.command == "worker" and not args.action):
        die_with_parent(int(parent) if parent else None)
    try:
        return _run(parser, args)
    except exception.Error as e:
        report(e)
        return 1


def _run(parser, args) -> int:
    config.check_environment(getattr(args, "env", None), f"ember {args.command}")
    if getattr(args, "verbose", False):  # read where builds are shown (_client/terminal.py)
        os.environ["EMBER_VERBOSE"] = "1"
    if args.command == "run":
        from .run import run
        return run(args.target, args.args)
    if args.command == "serve":
        from .serve import serve
        return serve(args.file)
    if args.command == "server":
        from ..server.main import run as run_server
        return run_server(args)
    if args.command == "worker" and not args.action:
        from ..worker.main import run as run_worker
        return run_worker(args)
    if args.command == "token" and args.action == "set":  # writes the config file: no server involved
        from .profile import run_token_set
        return run_token_set(args)
    if args.command in ("token", "workspace", "worker"):
        from .identity import run as run_identity
        return run_identity(args)
    if args.command == "deploy":
        from .apps import deploy
        return deploy(args)
    if args.command in ("app", "image"):
        from .apps import run as run_apps
        return run_apps(args)
    if args.command in ("container", "shell"):
        from .containers import run as run_containers
        return run_containers(args)
    if args.command == "sandbox":
        from .sandboxes import run as run_sandboxes
        return run_sandboxes(args)
    if args.command == "call":
        from .failures import run as run_call
        return run_call(args)
    if args.command == "profile":
        from .profile import run as run_profile
        return run_profile(args)
    if args.command == "usage":
        from .usage import run as run_usage
        return run_usage(args)
    if args.command in ("dict", "queue", "secret", "proxy-token", "volume"):
        from .objects import run as run_objects
        return run_objects(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
