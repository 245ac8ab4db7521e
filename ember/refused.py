"""Modal's names that cannot work in Ember, and those it accepts only with a note.

Each refused name exists, so that a Modal program that names it still imports, and raises at use
(constructing it, calling it or one of its methods, decorating with it) an error saying why and
what to use instead. `bench/modal_names.py --markdown` prints README's checklist from REFUSED
and ACCEPTED: this module is the one place that says what Ember refuses.
"""

import types

from . import exception

NO_CREDENTIALS = ("use Image.from_registry() with an image they can pull as is (a public one, or a registry "
                  "mirror on your network)")
SAME_RECIPE = ("define the image in a module both programs import: the same steps (and local files) are the same "
               "image, built once and reused from the cache")
STATS_NOW = ("f.get_current_stats() tells what a function does now, `ember usage` what containers used, and the "
             "control plane's /metrics counts inputs by function")
USE_WEB = "serve HTTP from a function with @ember.web_server, @ember.asgi_app or @ember.fastapi_endpoint"

# name -> why Ember refuses it and what to use instead. "Cls.method" refuses a class's method.
REFUSED: dict[str, str] = {
    "Client": "Ember's client is made from EMBER_SERVER_URL and a token (EMBER_TOKEN_ID and EMBER_TOKEN_SECRET, "
              "or `ember profile activate`): there is no Client object to make or pass",
    "CloudBucketMount": "Ember mounts no cloud buckets (it has no object-store mounts): copy the data into an "
                        "ember.Volume, or read the bucket with its client library inside the function",
    "Cluster": "Ember runs no multi-node clusters (containers started together on a shared network): "
               "run independent inputs with .map()",
    "clustered": "Ember runs no multi-node clusters (containers started together on a shared network): "
                 "run independent inputs with .map()",
    "Environment": "Ember has no environments; its namespaces are workspaces, and the token chooses one",
    "NetworkFileSystem": "use ember.Volume: files shared by containers, committed as versions",
    "Proxy": "Ember has no static-IP proxies: containers reach the network through their worker's NAT",
    "SchedulerPlacement": "Ember places containers by their resources (cpu, memory, gpu) only: there are no "
                          "regions or zones to choose",
    "Server": f"Modal's Server (a web server with sessions) has no counterpart in Ember: {USE_WEB}",
    "sessioned": f"Ember has no sessions (they belong to Modal's Server): {USE_WEB}",
    "forward": "Ember serves the ports of sandboxes only (Sandbox.create(encrypted_ports=[PORT]), then "
               f"sb.tunnels()), not of a function's container: {USE_WEB}",
    "Workspace": "the SDK has no Workspace object: an admin manages workspaces with `ember workspace` and "
                 "tokens with `ember token`",
    "billing": "Ember has no billing: `ember usage` reports what containers used",
    "experimental": "Modal's experimental APIs are Modal's own; Ember has none of them",
    "Image.micromamba": "conda images need a conda-forge mirror, and Ember's builds have none: use "
                        "debian_slim() with pip_install()/apt_install(), or from_registry() of a conda image "
                        "with Python 3.11 as python3",
    "Image.micromamba_install": "conda packages need a conda-forge mirror, and Ember's builds have none: install "
                                "with pip_install() or apt_install(), or run micromamba in run_commands()",
    "Image.shell": "build commands run with sh -c: run another shell inside the command (bash -c '...')",
    "Image.from_aws_ecr": f"Ember's workers pull images without registry credentials: {NO_CREDENTIALS}",
    "Image.from_gcp_artifact_registry": f"Ember's workers pull images without registry credentials: {NO_CREDENTIALS}",
    "Image.pip_install_private_repos": "Ember has no GitHub/GitLab integration: pass the token in a secret and "
                                       "install in run_commands(\"pip install git+https://$TOKEN@github.com/...\", "
                                       "secrets=[ember.Secret.from_name(...)])",
    "Image.from_scratch": "Ember's containers run its Python runtime, so every image needs Python 3.11: start "
                          "from debian_slim() or from_registry()",
    "Image.from_id": f"Ember names an image by its recipe, not by a stored id: {SAME_RECIPE}",
    "Image.from_name": f"Ember has no image registry of its own to publish to: {SAME_RECIPE}",
    "Image.publish": f"Ember has no image registry of its own to publish to: {SAME_RECIPE}",
    "Image.logs": "Ember keeps no build logs: a build's output shows on the terminal of whoever builds it "
                  "(image.build(), `ember run`, `ember deploy`)",
    "App.server": f"Modal's Server (a web server with sessions) has no counterpart in Ember: {USE_WEB}",
    "App.stats": f"Ember keeps no statistics over time ranges: {STATS_NOW}",
    "Function.stats": f"Ember keeps no statistics over time ranges: {STATS_NOW}",
    "Function.metrics": "Ember's metrics are the control plane's /metrics (Prometheus: ember_inputs_completed_total "
                        "and the rest, by app and function; README, Metrics): scrape them there",
    "Function.autoscaler": "Ember has no autoscaler settings manager: set them on @app.function() and change them "
                           "with f.update_autoscaler(min_containers=, max_containers=, buffer_containers=, "
                           "scaledown_window=); f.info() shows the decorator's",
    "FunctionCall.get_call_graph": "Ember records no call graph (which call made which): a call's result and its "
                                   "logs are found by its id (FunctionCall.from_id(id).get(), .logs)",
    "App.sandboxes": "Ember keeps no statistics over time ranges: Sandbox.list(app_id=app.app_id) lists an app's "
                     "sandboxes, and `ember usage --by function` what they used",
    "SandboxSnapshot": "Ember takes no memory snapshots of sandboxes: sb.snapshot_filesystem() keeps their files "
                       "as an Image that later sandboxes start from",
    "Sandbox.reload_volumes": "a sandbox's volumes are what they were when it started: to see later commits, "
                              "create a new sandbox (or read the volume with Volume.read_file from your program)",
    "Sandbox.mount_image": "Ember mounts no images into a running sandbox: create the sandbox with the image "
                           "(Sandbox.create(image=...)), or add the files with sb.open()",
    "Sandbox.unmount_image": "Ember mounts no images into a running sandbox: create the sandbox with the image "
                             "(Sandbox.create(image=...))",
    "Sandbox.snapshot_directory": "Ember snapshots a sandbox's whole filesystem, not one directory: "
                                  "sb.snapshot_filesystem()",
    "Sandbox.create_connect_token": "a tunnel takes the workspace's token in the Authorization header "
                                    "(Bearer TOKEN_ID:TOKEN_SECRET), or none with Sandbox.create(public_ports=True): "
                                    "there are no connect tokens",
    "Sandbox.filesystem": "Ember's sandbox files are sb.open(), sb.ls(), sb.mkdir(), sb.rm() and sb.watch()",
    "Sandbox.logs": "a sandbox's output is its command's: read sb.stdout and sb.stderr (kept by the control plane "
                    "from its start), or `ember sandbox list` and `ember container logs`",
    "interact": "Ember has no interactive mode (no `run -i`, no terminal attached to a container): print (prints "
                "show on the caller's terminal), or run the function here with f.local()",
}

# name -> what Ember does with a name it accepts but that does less than Modal's.
ACCEPTED: dict[str, str] = {
    "enable_output": "Ember's output (build logs, prints, web URLs) is always on: the block changes nothing",
    "web_endpoint": "Modal's older name of fastapi_endpoint, the same here",
    "App.info": "AppInfo has app_id, description, functions (ids by name), deployed and version; no lifecycle",
    "Function.info": "FunctionInfo has the fields Ember has (resources, timeout, retries, concurrency, batching, "
                     "scaling, volumes and secrets by id, web_url); none of Modal's cloud ones",
    "Volume.with_mount_options": "read_only= as in Modal; sub_path= is refused (a volume is mounted whole)",
    "Volume.rename": "makes the new name hold the same files and deletes the old: the volume's object_id changes",
    "Dict.info": "created_by is None: Ember does not record who made an object",
    "Image.cmd": "changes nothing: the command of Ember's containers is its runtime (given to the entrypoint)",
    "Image.from_registry": "add_python= and secret= (registry credentials) are refused when the image is built",
    "Image.from_dockerfile": "common instructions become steps; others are refused naming the line (README, Images)",
    "Image.dockerfile_commands": "as from_dockerfile; `FROM base` is the image it extends",
    "Image.uv_sync": "installs the pins of uv.lock (exported here by `uv export`) into the image's Python",
    "Image.poetry_install_from_file": "installs the pins of poetry.lock with uv; poetry itself never runs",
    "Sandbox.wait_until_ready": "on the Sandbox object that create(readiness_probe=) returned: the probe is kept "
                                "by that object, and tried from there",
    "Secret.objects": "create(allow_existing=True) keeps the existing secret; list() gives handles, never values",
    "types": "DictInfo, QueueInfo, SecretInfo, VolumeInfo, FileEntry, FileEntryType; the rest is Modal's own",
}


def refusal(name: str) -> exception.InvalidError:
    """The error for a refused "Cls.method" that its class raises itself."""
    return exception.InvalidError(f"ember.{name}(): not supported by Ember: {REFUSED[name]}")


def _refuse(name: str, what: str):
    raise exception.InvalidError(f"ember.{what}: not supported by Ember: {REFUSED[name]}")


def _refusing(name: str, what: str):
    def refuse(*args, **kwargs):
        _refuse(name, what)
    refuse.__name__ = refuse.__qualname__ = what.split(".")[-1].removesuffix("()")
    return refuse


class _RefusedClass(type):
    """A refused class: making one, or calling any of its public methods, raises the refusal."""

    def __call__(cls, *args, **kwargs):
        _refuse(cls.__name__, f"{cls.__name__}()")

    def __getattr__(cls, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return _refusing(cls.__name__, f"{cls.__name__}.{attr}()")


class _RefusedModule(types.ModuleType):
    """A refused module: any of its names, once called, raises the refusal."""

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return _refusing(self.__name__.rsplit(".", 1)[-1], f"{self.__name__.removeprefix('ember.')}.{attr}()")


def refused(name: str):
    """The stand-in that ember exports as `name`."""
    if name[:1].isupper():
        return _RefusedClass(name, (), {"__module__": "ember", "__doc__": f"Refused by Ember: {REFUSED[name]}."})
    if name in ("billing", "experimental"):
        return _RefusedModule(f"ember.{name}", f"Refused by Ember: {REFUSED[name]}.")
    return _refusing(name, f"{name}()")


__all__ = ["ACCEPTED", "REFUSED", "refusal", "refused"]
