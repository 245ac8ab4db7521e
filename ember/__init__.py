"""Ember: run Python functions in containers on machines you own.

    import ember

    app = ember.App("hello")

    @app.function()
    def square(x):
        return x * x

    @app.local_entrypoint()
    def main():
        print(square.remote(7))
"""

from . import exception, types
from .app import App
from .cls import Cls, enter, exit, method, parameter
from .context import current_function_call_id, current_input_id, enable_output, is_local
from .dict import Dict
from .batching import batched
from .function import Function, FunctionCall
from .image import Image
from .patterns import FilePatternMatcher
from .probe import Probe
from .queue import Queue
from .retries import Retries
from .sandbox import ContainerProcess, Sandbox
from .schedule import Cron, Period
from .secret import Secret
from .tunnel import Tunnel
from .volume import Volume
from .exception import Error
from .refused import refused as _refused
from .web import asgi_app, concurrent, fastapi_endpoint, web_endpoint, web_server, wsgi_app

# Modal's names that cannot work here: each raises at use, saying why (ember/refused.py).
Client = _refused("Client")
CloudBucketMount = _refused("CloudBucketMount")
Cluster = _refused("Cluster")
Environment = _refused("Environment")
NetworkFileSystem = _refused("NetworkFileSystem")
Proxy = _refused("Proxy")
SandboxSnapshot = _refused("SandboxSnapshot")
SchedulerPlacement = _refused("SchedulerPlacement")
Server = _refused("Server")
Workspace = _refused("Workspace")
billing = _refused("billing")
clustered = _refused("clustered")
experimental = _refused("experimental")
forward = _refused("forward")
interact = _refused("interact")
sessioned = _refused("sessioned")

__all__ = ["App", "Client", "CloudBucketMount", "Cls", "Cluster", "ContainerProcess", "Cron", "Dict", "Environment",
           "Error", "FilePatternMatcher", "Function", "FunctionCall", "Image", "NetworkFileSystem", "Period", "Probe",
           "Proxy", "Queue", "Retries", "Sandbox", "SandboxSnapshot", "SchedulerPlacement", "Secret", "Server",
           "Tunnel", "Volume", "Workspace", "asgi_app", "batched", "billing", "clustered", "concurrent",
           "current_function_call_id", "current_input_id", "enable_output", "enter", "exception", "exit",
           "experimental", "fastapi_endpoint", "forward", "interact", "is_local", "method", "parameter", "sessioned",
           "types", "web_endpoint", "web_server", "wsgi_app"]
__version__ = "0.1.0"
