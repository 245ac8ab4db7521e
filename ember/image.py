"""ember.Image: a container image declared in code, as a chain of build steps.

Each step becomes one layer, named by a hash of its parent layer's name and the step itself
(local files count by their content), so an unchanged step is never rebuilt and a changed one
rebuilds itself and what follows. Images are built by a worker when an app starts; this module
only describes them and packs the local files they need.
"""

import contextlib
import fnmatch
import hashlib
import importlib.util
import inspect
import io
import json
import os
import pathlib
import sys
import tarfile
import typing

import cloudpickle

from . import exception
from .proto import api_pb2

# Changing how a step is built changes every layer's name: bump this with such a change.
BUILDER_VERSION = "1"
# Python versions a debian_slim base can provide, by the Debian release that provides them.
DEBIAN_PYTHONS = {"3.11": "bookworm"}
DEFAULT_WORKDIR = "/root"
# Inside a container: the recipe of the image it runs (set by the runtime before user code loads).
current_recipe: str | None = None


class _Step(typing.NamedTuple):
    kind: str
    args: tuple = ()
    env: tuple = ()           # sorted (key, value) pairs
    path: str = ""
    force_build: bool = False
    # Local content, looked at only when the image is resolved on the caller's machine (a
    # container imports the same module without those files): a function () -> [(local path,
    # path in the archive)], or ("function", (fn, args, kwargs)).
    local: typing.Any = None


def _strings(what: str, values) -> tuple[str, ...]:
    """Flatten str/list arguments (pip_install("a", ["b", "c"])) and check they are strings."""
    out = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out.extend(_strings(what, v))
        elif isinstance(v, str) and v.strip():
            out.append(v.strip())
        else:
            raise exception.InvalidError(f"{what}: {v!r} is not a non-empty string")
    return tuple(out)


def _pip_options(index_url, extra_index_url, find_links, pre, extra_options) -> tuple[str, ...]:
    opts = []
    if index_url:
        opts += ["--index-url", index_url]
    if extra_index_url:
        opts += ["--extra-index-url", extra_index_url]
    if find_links:
        opts += ["--find-links", find_links]
    if pre:
        opts.append("--pre")
    if extra_options:
        opts += extra_options.split()
    return tuple(opts)


def _abs_remote(path: str, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise exception.InvalidError(f"{what}: pass the path inside the container as a string")
    p = path if path.startswith("/") else f"{DEFAULT_WORKDIR}/{path}"
    return os.path.normpath(p)


class Image:
    """An image: build steps, applied in order. Every method returns a new Image."""

    def __init__(self, steps: tuple[_Step, ...]):
        self._steps = steps

    def __repr__(self):
        return f"<ember.Image {' -> '.join(s.kind for s in self._steps)}>"

    def _then(self, step: _Step) -> "Image":
        return Image(self._steps + (step,))

    # ------------------------------------------------------------------ bases

    @staticmethod
    def debian_slim(python_version: str | None = None, force_build: bool = False) -> "Image":
        """Debian with Python, built from Debian's own packages (debootstrap)."""
        if python_version is None:
            python_version = "3.11"
        if not isinstance(python_version, str) or python_version not in DEBIAN_PYTHONS:
            raise exception.InvalidError(
                f"debian_slim(python_version={python_version!r}): not available. The Debian bases here provide "
                f"Python {', '.join(DEBIAN_PYTHONS)}; pass one of those (or None), or use Image.from_registry() "
                "with an image that has the Python you need")
        return Image((_Step("debian_slim", (DEBIAN_PYTHONS[python_version], python_version),
                            force_build=force_build),))

    @staticmethod
    def from_registry(tag: str, force_build: bool = False) -> "Image":
        """An image from an OCI registry, e.g. "python:3.11-slim" or "127.0.0.1:5000/team/base:1".

        It must contain Python 3.11 as `python3` for Ember's runtime to run in it."""
        if not isinstance(tag, str) or not tag.strip() or " " in tag.strip():
            raise exception.InvalidError(f"from_registry({tag!r}): pass an image reference such as 'python:3.11'")
        return Image((_Step("from_registry", (tag.strip(),), force_build=force_build),))

    # ------------------------------------------------------------------ packages

    def pip_install(self, *packages, index_url: str | None = None, extra_index_url: str | None = None,
                    find_links: str | None = None, pre: bool = False, extra_options: str = "",
                    force_build: bool = False) -> "Image":
        """Install Python packages (with uv, into the image's Python); bytecode is compiled."""
        pkgs = _strings("pip_install", packages)
        if not pkgs:
            return self
        opts = _pip_options(index_url, extra_index_url, find_links, pre, extra_options)
        return self._then(_Step("pip_install", opts + pkgs, force_build=force_build))

    uv_pip_install = pip_install

    def pip_install_from_requirements(self, requirements_txt: str, find_links: str | None = None, *,
                                      index_url: str | None = None, extra_index_url: str | None = None,
                                      pre: bool = False, extra_options: str = "",
                                      force_build: bool = False) -> "Image":
        path = pathlib.Path(requirements_txt).expanduser()

        def files():
            if not path.is_file():
                raise exception.InvalidError(f"pip_install_from_requirements: {requirements_txt} is not a file")
            return [(path, "requirements.txt")]

        opts = _pip_options(index_url, extra_index_url, find_links, pre, extra_options)
        return self._then(_Step("pip_install", opts + ("-r", "/.ember-files/requirements.txt"),
                                force_build=force_build, local=files))

    def apt_install(self, *packages, force_build: bool = False) -> "Image":
        pkgs = _strings("apt_install", packages)
        if not pkgs:
            return self
        return self._then(_Step("apt_install", pkgs, force_build=force_build))

    def run_commands(self, *commands, force_build: bool = False) -> "Image":
        """Run shell commands in the image, in order, as one layer."""
        cmds = _strings("run_commands", commands)
        if not cmds:
            return self
        return self._then(_Step("run_commands", cmds, force_build=force_build))

    def run_function(self, raw_f, *, args: tuple = (), kwargs: dict | None = None,
                     force_build: bool = False) -> "Image":
        """Run a Python function inside the image at build time (download a model, say)."""
        if not callable(raw_f):
            raise exception.InvalidError(f"run_function({raw_f!r}): pass a function")
        return self._then(_Step("run_function", (getattr(raw_f, "__qualname__", repr(raw_f)),),
                                force_build=force_build, local=("function", (raw_f, tuple(args), kwargs or {}))))

    # ------------------------------------------------------------------ configuration

    def env(self, vars: dict[str, str]) -> "Image":
        if not isinstance(vars, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in vars.items()):
            raise exception.InvalidError(f"env({vars!r}): pass a dict of string names to string values")
        return self._then(_Step("env", env=tuple(sorted(vars.items()))))

    def workdir(self, path: str) -> "Image":
        return self._then(_Step("workdir", path=_abs_remote(path, "workdir")))

    # ------------------------------------------------------------------ local files
    # Local files always become a layer of their own; `copy=` is accepted as Modal's API has it.

    def add_local_file(self, local_path, remote_path: str, *, copy: bool = True) -> "Image":
        src = pathlib.Path(local_path).expanduser()
        remote = _abs_remote(remote_path + src.name if remote_path.endswith("/") else remote_path, "add_local_file")

        def files():
            if not src.is_file():
                raise exception.InvalidError(f"add_local_file: {local_path} is not a file")
            return [(src, remote.lstrip("/"))]

        return self._then(_Step("add_local", path="/", args=(remote,), local=files))

    def add_local_dir(self, local_path, remote_path: str, *, copy: bool = True,
                      ignore: typing.Sequence[str] | typing.Callable[[pathlib.Path], bool] = ()) -> "Image":
        src = pathlib.Path(local_path).expanduser()
        remote = _abs_remote(remote_path, "add_local_dir")
        _check_ignore(ignore)

        def files():
            if not src.is_dir():
                raise exception.InvalidError(f"add_local_dir: {local_path} is not a directory")
            return _dir_files(src, ignore)

        return self._then(_Step("add_local", path=remote, local=files))

    def add_local_python_source(self, *modules: str, copy: bool = True,
                                ignore: typing.Sequence[str] | typing.Callable = ("**/__pycache__", "*.pyc")
                                ) -> "Image":
        """Local Python modules or packages, importable by name in the container (under /root)."""
        names = _strings("add_local_python_source", modules)
        _check_ignore(ignore)

        def files():
            out = []
            for name in names:
                spec = importlib.util.find_spec(name)
                if spec is None or spec.origin is None:
                    raise exception.InvalidError(
                        f"add_local_python_source: no module named {name!r} is importable here")
                if spec.submodule_search_locations:  # a package: its whole directory
                    pkg = pathlib.Path(list(spec.submodule_search_locations)[0])
                    out += [(p, f"{name.replace('.', '/')}/{rel}") for p, rel in _dir_files(pkg, ignore)]
                else:
                    out.append((pathlib.Path(spec.origin), f"{name.replace('.', '/')}.py"))
            return out

        return self._then(_Step("add_local", path=DEFAULT_WORKDIR, args=("compile", *names), local=files))

    # ------------------------------------------------------------------ remote-only imports

    @contextlib.contextmanager
    def imports(self):
        """`with image.imports(): import torch`: the imports must work in containers of this
        image; anywhere else (the caller's machine, containers of other images) a package only
        this image has is simply missing."""
        try:
            yield
        except ImportError:
            if current_recipe is not None and current_recipe == recipe(
                    [(s.kind, s.args, dict(s.env), s.path) for s in self._steps]):
                raise

    # ------------------------------------------------------------------ resolving

    def _resolve(self, upload: typing.Callable[[bytes], str]) -> api_pb2.Image:
        """Name every layer and upload the local content the steps need."""
        steps = []
        parent = ""
        for s in self._steps:
            blob_id, digest = "", ""
            if s.local is not None:
                data, digest = _pack(s)
                blob_id = upload(data)
            layer = hashlib.sha256(json.dumps(
                [BUILDER_VERSION, parent, s.kind, s.args, s.env, s.path, digest]).encode()).hexdigest()
            steps.append(api_pb2.ImageStep(kind=api_pb2.ImageStep.Kind.Value(s.kind.upper()), args=s.args,
                                           env=dict(s.env), path=s.path,
                                           blob_id=blob_id, force_build=s.force_build, layer_id=layer))
            parent = layer
        return api_pb2.Image(image_id=parent, steps=steps)


DEFAULT_IMAGE = Image.debian_slim()


def recipe(steps) -> str:
    """The image's steps without their local content: the same on the caller's machine and in
    its containers (which lack the local files), to tell which image a container runs."""
    return hashlib.sha256(json.dumps(
        [[kind, list(args), sorted(env.items()), path] for kind, args, env, path in steps]).encode()).hexdigest()


def _ignored(rel: str, ignore) -> bool:
    if callable(ignore):
        return bool(ignore(pathlib.Path(rel)))
    for pat in ignore:
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel, pat.removeprefix("**/")) \
                or any(fnmatch.fnmatch(part, pat.removeprefix("**/")) for part in rel.split("/")):
            return True
    return False


def _check_ignore(ignore):
    if not callable(ignore) and (isinstance(ignore, str) or not all(isinstance(p, str) for p in ignore)):
        raise exception.InvalidError(f"ignore={ignore!r}: pass a list of glob patterns or a function of the path")


def _dir_files(root: pathlib.Path, ignore) -> list[tuple[pathlib.Path, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames
                             if not _ignored(os.path.normpath(os.path.join(rel_dir, d)), ignore))
        for f in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, f))
            if not _ignored(rel, ignore):
                out.append((pathlib.Path(dirpath) / f, rel))
    return out


def _pack(step: _Step) -> tuple[bytes, str]:
    """The step's local content as bytes for the blob store, and the digest that names it."""
    if isinstance(step.local, tuple):  # ("function", ...)
        fn, args, kwargs = step.local[1]
        module = sys.modules.get(getattr(fn, "__module__", ""), None)
        by_value = module is not None and module.__name__ != "__main__"
        if by_value:
            cloudpickle.register_pickle_by_value(module)
        try:
            data = cloudpickle.dumps((fn, args, kwargs))
        except Exception as e:
            raise exception.InvalidError(f"run_function({fn!r}): cannot be serialized: {e}") from e
        finally:
            if by_value:
                cloudpickle.unregister_pickle_by_value(module)
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            source = data.hex()
        digest = hashlib.sha256(source.encode() + repr((args, sorted(kwargs.items()))).encode()).hexdigest()
        return data, digest
    # Files: a tar that depends on their content and mode only, so its hash names the content.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for src, arcname in sorted(step.local(), key=lambda t: t[1]):
            try:
                data = src.read_bytes()
                mode = src.stat().st_mode & 0o777
            except OSError as e:
                raise exception.InvalidError(f"cannot read {src}: {e}") from e
            info = tarfile.TarInfo(arcname)
            info.size, info.mode, info.mtime = len(data), mode | 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()
