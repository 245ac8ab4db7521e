"""Web endpoints: decorators that make a function answer HTTP at a stable URL.

    @app.function(image=ember.Image.debian_slim().pip_install("fastapi[standard]"))
    @ember.fastapi_endpoint(method="POST")
    def predict(item: dict):
        return {"echo": item}

They go below @app.function() (they mark the function; @app.function reads the mark), and so
does @ember.concurrent. The control plane's HTTP gateway serves each endpoint at
`http://GATEWAY/LABEL`, where LABEL is the label given or APP-FUNCTION (with "-dev" for an app
that is not deployed); `f.get_web_url()` says where.
"""

import inspect
import re

from . import exception
from .proto import api_pb2

Kind = api_pb2.WebEndpoint
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _mark(kind: int, decorator: str, label, requires_proxy_auth, takes_no_args: bool, **fields):
    if label is not None and (not isinstance(label, str) or not LABEL.match(label)):
        raise exception.InvalidError(f"label={label!r}: use lowercase letters, digits and hyphens (at most 63)")
    web = api_pb2.WebEndpoint(kind=kind, label=label or "", requires_proxy_auth=bool(requires_proxy_auth), **fields)

    def wrap(raw_f):
        from .function import Function
        if isinstance(raw_f, Function):
            raise exception.InvalidError(f"@ember.{decorator}() goes below @app.function(), not above it")
        if not callable(raw_f) or inspect.isclass(raw_f):
            raise exception.InvalidError(f"@ember.{decorator}() decorates functions, not {raw_f!r}")
        params = [p for p in inspect.signature(raw_f).parameters.values() if p.name != "self"]  # a class's method
        if takes_no_args and any(p.default is inspect.Parameter.empty
                                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                                 for p in params):
            raise exception.InvalidError(f"{raw_f.__name__}: an @ember.{decorator}() function takes no arguments "
                                         "(it is called once per container)")
        raw_f._ember_web = web
        return raw_f

    return wrap


def fastapi_endpoint(*, method: str = "GET", label: str | None = None, docs: bool = False,
                     requires_proxy_auth: bool = False):
    """The function answers `method` requests: query parameters and a JSON body become its
    arguments as FastAPI makes them (FastAPI must be in its image)."""
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise exception.InvalidError(f"method={method!r}: pass one of {', '.join(METHODS)}")
    return _mark(Kind.FASTAPI, "fastapi_endpoint", label, requires_proxy_auth, False, method=method.upper(),
                 docs=bool(docs))


# Modal's older name of fastapi_endpoint (deprecated there).
web_endpoint = fastapi_endpoint


def asgi_app(*, label: str | None = None, requires_proxy_auth: bool = False):
    """The function returns an ASGI app (FastAPI, Starlette, ...), which serves every path and
    WebSockets."""
    return _mark(Kind.ASGI, "asgi_app", label, requires_proxy_auth, True)


def wsgi_app(*, label: str | None = None, requires_proxy_auth: bool = False):
    """The function returns a WSGI app (Flask, Django, ...); requests run in threads."""
    return _mark(Kind.WSGI, "wsgi_app", label, requires_proxy_auth, True)


def web_server(port: int, *, startup_timeout: float = 5.0, label: str | None = None,
               requires_proxy_auth: bool = False):
    """The function starts a server listening on `port` in the container (and returns);
    requests are relayed to it once the port opens (within startup_timeout seconds)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise exception.InvalidError(f"port={port!r}: pass the TCP port the server listens on, e.g. 8000")
    if not isinstance(startup_timeout, (int, float)) or not 0 < startup_timeout <= 3600:
        raise exception.InvalidError(f"startup_timeout={startup_timeout!r}: pass seconds, more than 0")
    return _mark(Kind.WEB_SERVER, "web_server", label, requires_proxy_auth, True, port=port,
                 startup_timeout=float(startup_timeout))


def concurrent(*, max_inputs: int, target_inputs: int | None = None):
    """One container runs up to max_inputs inputs at once: web requests on its event loop, an
    async function's inputs as tasks on one event loop, a sync function's in as many threads.
    The autoscaler aims for target_inputs per container (default max_inputs): more containers
    start when they hold more than that, each taking up to max_inputs in a burst."""
    from .function import check_concurrency
    check_concurrency(max_inputs, target_inputs)

    def wrap(target):
        from .function import Function
        if isinstance(target, Function):
            raise exception.InvalidError("@ember.concurrent() goes below @app.function(), not above it")
        if getattr(target, "_ember_batched", None) and max_inputs > 1:
            raise exception.InvalidError("a function is @ember.batched() or @ember.concurrent(), not both")
        target._ember_max_inputs = max_inputs
        target._ember_target_inputs = target_inputs or 0
        return target

    return wrap
