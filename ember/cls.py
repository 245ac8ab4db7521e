"""Classes: `@app.cls()` with `@ember.enter()`, `@ember.exit()`, `@ember.method()` and
`ember.parameter()`, as Modal has them.

    @app.cls(gpu="A100")
    class Model:
        size: str = ember.parameter(default="small")

        @ember.enter()
        def load(self):                  # once per container, before its first input
            self.weights = load(self.size)

        @ember.method()
        def predict(self, x):
            return self.weights(x)

    Model().predict.remote(1)
    Model(size="large").predict.map(xs)  # another set of parameters: containers of its own

A class is one function on the control plane whose inputs name the method they call; an
instance with parameters is a function of its own (bound once per set of parameters).
"""

import inspect

import cloudpickle

from . import exception
from ._client.client import Client
from .function import _UNSET, Function, Options, check_batching, check_concurrency
from .proto import api_pb2

PARAMETER_TYPES = (str, int, bool, bytes)
_NO_DEFAULT = object()


class _Parameter:
    def __init__(self, default):
        self.default = default


def parameter(*, default=_NO_DEFAULT, init: bool = True):
    """A class field set per instance: `Model(size="large")`. Values: str, int, bool or bytes."""
    if default is not _NO_DEFAULT and not isinstance(default, PARAMETER_TYPES):
        raise exception.InvalidError(f"parameter(default={default!r}): parameters are str, int, bool or bytes")
    return _Parameter(default)


def _marker(attr: str):
    def decorator_factory(_f=None, **_options):
        def mark(f):
            if not callable(f):
                raise exception.InvalidError(f"@ember.{attr}() decorates methods, not {f!r}")
            setattr(f, f"_ember_{attr}", True)
            return f
        return mark(_f) if _f is not None else mark
    decorator_factory.__name__ = attr
    decorator_factory.__doc__ = f"Mark a method of an @app.cls class with @ember.{attr}()."
    return decorator_factory


def enter(_f=None, *, snap: bool = False):
    """Mark a method of an @app.cls class to run once per container, before its first input.
    Those with snap=True run first: with enable_memory_snapshot=True, before the container is
    checkpointed, so that containers restored from that checkpoint skip them and run only the others."""
    if not isinstance(snap, bool):
        raise exception.InvalidError(f"@ember.enter(snap={snap!r}): pass True or False")

    def mark(f):
        if not callable(f):
            raise exception.InvalidError(f"@ember.enter() decorates methods, not {f!r}")
        f._ember_enter = True
        f._ember_snap = snap
        return f
    return mark(_f) if _f is not None else mark


exit = _marker("exit")      # runs when the container stops
method = _marker("method")  # callable remotely: Model().name.remote(...)


def class_parameters(user_cls) -> dict:
    """The class's ember.parameter() fields and their defaults."""
    return {k: v.default for k, v in vars(user_cls).items() if isinstance(v, _Parameter)}


def hooks(user_cls, kind: str) -> list[str]:
    """Names of the methods marked @ember.enter() or @ember.exit(), in definition order; enter
    hooks with snap=True before the others."""
    marked = [(k, v) for k, v in vars(user_cls).items() if callable(v) and getattr(v, f"_ember_{kind}", False)]
    return [k for k, v in sorted(marked, key=lambda kv: not getattr(kv[1], "_ember_snap", False))]


def enter_hooks(user_cls, snap: bool) -> list[str]:
    """Names of its @ember.enter(snap=snap) methods, in definition order."""
    return [k for k in hooks(user_cls, "enter") if getattr(vars(user_cls)[k], "_ember_snap", False) == snap]


def instantiate(user_cls, params: dict, snap_only: bool = False):
    """An instance as a container makes it: parameters set, then the enter hooks run (with
    snap_only, those of snap=True only: the others run after its memory snapshot is restored)."""
    obj = user_cls.__new__(user_cls)
    values = {k: v for k, v in class_parameters(user_cls).items() if v is not _NO_DEFAULT}
    values.update(params)
    for k, v in values.items():
        setattr(obj, k, v)
    if user_cls.__init__ is not object.__init__ and not class_parameters(user_cls):
        obj.__init__()
    for name in enter_hooks(user_cls, True) if snap_only else hooks(user_cls, "enter"):
        getattr(obj, name)()
    return obj


class Cls:
    """An @app.cls class: call it with its parameters to get an instance whose methods run remotely."""

    def __init__(self, function: Function, user_cls=None):
        """Every Cls is made here: one decorated in an app (its function and the class itself), or
        one looked up by name (its function only: the control plane knows its methods)."""
        self._function = function  # the class's own function: hydrated when the app runs, or looked up
        self._name = function._name
        self._user_cls = user_cls
        self._methods: dict[str, bool] | None = None  # name: is a generator; None until known
        self._web_methods: dict = {}  # methods that are web endpoints (@ember.fastapi_endpoint() on a method)
        self._params: dict | None = None  # None: not known here (a class by name)
        if user_cls is not None:
            members = {k: v for k, v in vars(user_cls).items() if callable(v)}
            self._methods = {k: inspect.isgeneratorfunction(v) or inspect.isasyncgenfunction(v)
                             for k, v in members.items() if getattr(v, "_ember_method", False)}
            self._web_methods = {k: v._ember_web for k, v in members.items()
                                 if getattr(v, "_ember_web", None) is not None}
            self._params = class_parameters(user_cls)
        self._instances: dict[bytes, _Instance] = {}
        self._options: Options | None = None  # with_options and friends: its instances' functions have them

    def __repr__(self):
        return f"<ember.Cls {self._name}>"

    def _with(self, **changes) -> "Cls":
        """The same class, its instances' calls running with these options (a function of their
        own on the control plane, with their own containers); this one keeps its own."""
        variant = Cls.__new__(Cls)
        variant.__dict__.update(self.__dict__)
        variant._instances = {}
        variant._options = (self._options or Options()).merged(**changes)
        return variant

    def with_options(self, *, cpu=_UNSET, memory=_UNSET, gpu=_UNSET, retries=_UNSET, timeout=_UNSET,
                     secrets=_UNSET, volumes=_UNSET, scaledown_window=_UNSET, min_containers=_UNSET,
                     max_containers=_UNSET, buffer_containers=_UNSET) -> "Cls":
        """The same class with other resources or policies: `Model.with_options(gpu="H100")().predict.remote(x)`."""
        given = {k: v for k, v in locals().items() if k != "self" and v is not _UNSET}
        return self._with(**given)

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> "Cls":
        check_concurrency(max_inputs, target_inputs)
        return self._with(max_inputs=max_inputs, target_inputs=target_inputs or 0)

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> "Cls":
        check_batching(max_batch_size, wait_ms)
        return self._with(batch_max_size=max_batch_size, batch_wait_ms=wait_ms)

    @classmethod
    def from_name(cls, app_name: str, name: str, *, environment_name: str | None = None) -> "Cls":
        """A class of a deployed app, from any process; its methods are looked up when first used."""
        return cls(Function.from_name(app_name, name, environment_name=environment_name))

    def get_user_cls(self):
        return self._user_cls

    def _definition_extras(self, d: api_pb2.FunctionDefinition):
        d.is_class = True
        d.methods.update(self._methods)
        for name, web in self._web_methods.items():
            d.web_methods[name].CopyFrom(web)
        d.max_inputs = getattr(self._user_cls, "_ember_max_inputs", 0)
        d.target_inputs = getattr(self._user_cls, "_ember_target_inputs", 0)
        batched = {k: v._ember_batched for k, v in vars(self._user_cls).items()
                   if callable(v) and getattr(v, "_ember_batched", None)}
        if batched:
            if len(self._methods) > 1:
                raise exception.InvalidError(
                    f"{self._name}: a class with an @ember.batched() method ({', '.join(batched)}) cannot have "
                    f"other methods ({', '.join(sorted(set(self._methods) - set(batched)))}): its containers take "
                    "batches of inputs. Put them in a class of their own.")
            d.batch_max_size, d.batch_wait_ms = next(iter(batched.values()))

    def __call__(self, **params) -> "_Instance":
        if self._params is not None:
            unknown = sorted(set(params) - set(self._params))
            if unknown:
                raise exception.InvalidError(f"{self._name}() has no parameter {', '.join(unknown)}; its parameters: "
                                             f"{', '.join(self._params) or 'none'}")
            missing = sorted(k for k, v in self._params.items() if v is _NO_DEFAULT and k not in params)
            if missing:
                raise exception.InvalidError(f"{self._name}() needs the parameter {', '.join(missing)}")
        for k, v in params.items():
            if not isinstance(v, PARAMETER_TYPES):
                raise exception.InvalidError(f"{self._name}({k}={v!r}): parameters are str, int, bool or bytes")
        key = cloudpickle.dumps(sorted(params.items())) if params else b""
        if key not in self._instances:
            self._instances[key] = _Instance(self, params, key)
        return self._instances[key]


class _Instance:
    """`Model(size=...)`: its methods are remote functions; its parameters are readable here."""

    def __init__(self, cls: Cls, params: dict, key: bytes):
        self._cls = cls
        self._params = params
        self._key = key
        self._bound: tuple[str, str] | None = None  # (class function id, the id bound to these parameters)

    def __getattr__(self, name):
        if name in self._params:
            return self._params[name]
        if self._cls._params is not None and name in self._cls._params:
            return self._cls._params[name]
        return _BoundMethod(self, name)

    async def _resolve(self) -> tuple[Client, str]:
        """The client, and the id of the class's function bound to these parameters (bound once)."""
        client, fid = await self._cls._function._resolve()
        options = self._cls._options
        if not self._key and options is None:
            return client, fid
        if self._bound is None or self._bound[0] != fid:
            resp = await client.rpc("FunctionBind", api_pb2.FunctionBindRequest(
                function_id=fid, params=self._key, options=await options.to_proto(client) if options else None),
                what=f"{self._cls._name}({', '.join(self._params)})")
            self._bound = (fid, resp.function_id)
        return client, self._bound[1]


class _BoundMethod(Function):
    """`Model().predict`: a Function whose inputs name the method."""

    def __init__(self, instance: _Instance, name: str):
        cls = instance._cls
        function = cls._function
        if cls._methods is None:  # a class looked up by name: the control plane knows its methods
            cls._methods = dict(function.hydrate()._methods or {})
        if name not in cls._methods and name not in (function._method_web_urls or cls._web_methods):
            raise AttributeError(f"{cls._name} has no method {name!r} marked @ember.method(); it has: "
                                 f"{', '.join(sorted(cls._methods)) or 'none'}")
        super().__init__(f"{cls._name}.{name}", app=function._app, spec=function._spec,
                         raw_f=getattr(cls._user_cls, name, None), method=name,
                         is_generator=cls._methods.get(name, False))  # a web method is no generator
        self._instance = instance

    def __repr__(self):
        return f"<ember method {self._name}>"

    def __reduce__(self):
        raise TypeError(f"{self._name} cannot be passed to a function: pass the class instance's parameters instead")

    def get_web_url(self) -> str | None:
        """Where this web method is served (None if it is not a web endpoint)."""
        function = self._instance._cls._function
        if function._function_id is None:
            function.hydrate()
        return function._method_web_urls.get(self._method)

    def _get_client(self) -> Client:
        return self._instance._cls._function._get_client()

    async def _resolve(self) -> tuple[Client, str]:
        return await self._instance._resolve()

    def local(self, *args, **kwargs):
        obj = instantiate(self._instance._cls._user_cls, self._instance._params)
        return getattr(obj, self._method)(*args, **kwargs)
