"""ember.Image: a container image declared in code, as a chain of build steps.

Each step becomes one layer, named by a hash of its parent layer's name and the step itself
(local files count by their content), so an unchanged step is never rebuilt and a changed one
rebuilds itself and what follows. Images are built by a worker when an app starts; this module
only describes them and packs the local files they need.
"""

import asyncio
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

from . import exception, refused
from ._layers import layer_id
from .proto import api_pb2

# Python versions a debian_slim base can provide, by the Debian release that provides them.
DEBIAN_PYTHONS = {"3.11": "bookworm"}
DEFAULT_WORKDIR = "/root"
# Inside a container: the recipe of the image it runs (set by the runtime before user code loads).
current_recipe: str | None = None


class _Step(typing.NamedTuple):
    kind: str
    args: tuple = ()
    env: tuple = ()           # sorted (key, value) pairs
    secrets: tuple = ()       # ember.Secret objects whose variables its build sees
    path: str = ""
    force_build: bool = False
    # Local content, looked at only when the image is resolved on the caller's machine (a
    # container imports the same module without those files): a function () -> [(local path,
    # path in the archive)], or ("function", (fn, args, kwargs)).
    local: typing.Any = None
    # Where its local files come from, as a build's progress shows the step (not part of its layer's name).
    source: str = ""


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


def _build_env(what: str, env, secrets, gpu) -> dict:
    """A build step's env=, secrets= and gpu=, as the step's fields: its own environment
    variables (for its build only, as Modal has them), as sorted pairs, and its secrets, whose
    variables its build sees too (the worker that builds it is given their values)."""
    from .secret import Secret
    if gpu:
        raise exception.InvalidError(f"{what}: gpu={gpu!r}: Ember builds images without GPUs; install GPU "
                                     "libraries without one (CUDA wheels do not need a GPU to install)")
    secrets = list(secrets or ())
    if not all(isinstance(s, Secret) for s in secrets):
        raise exception.InvalidError(f"{what}: secrets={secrets!r}: pass a list of ember.Secret objects "
                                     "(Secret.from_name, Secret.from_dict, ...)")
    if env is None:
        env = {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and k and (v is None or isinstance(v, str))
                                            for k, v in env.items()):
        raise exception.InvalidError(f"{what}: env={env!r}: pass a dict of string names to string values")
    return {"env": tuple(sorted((k, v) for k, v in env.items() if v is not None)), "secrets": tuple(secrets)}


class _NotHere(Exception):
    """A local file a declaration reads is missing, in a container: the module is imported there
    without the caller's files, and the image is never built from there."""


def _read_local(path: pathlib.Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as e:
        from . import context
        if not context.is_local():
            raise _NotHere() from None
        raise exception.InvalidError(f"{what}: cannot read {path}: {e.strerror}") from None


def _unavailable(image: "Image | None", what: str) -> "Image":
    """What a declaration that reads local files gives in a container that lacks them."""
    step = _Step("local_files_unavailable", (what,))
    return Image((step,)) if image is None else image._then(step)


def _reads_local_files(method):
    """For a method that reads local files as it is declared: in a container that lacks them,
    a stand-in step (see _NotHere)."""
    import functools

    @functools.wraps(method)
    def declare(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except _NotHere:
            return _unavailable(self, f"{method.__name__}({', '.join(repr(a) for a in args)})")
    return declare


def _toml(path: pathlib.Path, what: str) -> dict:
    import tomllib
    text = _read_local(path, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise exception.InvalidError(f"{what}: {path} is not valid TOML: {e}") from None


def _abs_remote(path: str, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise exception.InvalidError(f"{what}: pass the path inside the container as a string")
    p = path if path.startswith("/") else f"{DEFAULT_WORKDIR}/{path}"
    return os.path.normpath(p)


class Image:
    """An image: build steps, applied in order. Every method returns a new Image."""

    def __init__(self, steps: tuple[_Step, ...]):
        self._steps = steps
        self._image_id: str | None = None  # once built (build(), or an app that uses it started)

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
    def from_registry(tag: str, secret=None, *, setup_dockerfile_commands: list[str] = (), force_build: bool = False,
                      add_python: str | None = None) -> "Image":
        """An image from an OCI registry, e.g. "python:3.11-slim" or "127.0.0.1:5000/team/base:1",
        then the Dockerfile commands given, if any.

        It must contain Python 3.11 as `python3` for Ember's runtime to run in it."""
        if not isinstance(tag, str) or not tag.strip() or " " in tag.strip():
            raise exception.InvalidError(f"from_registry({tag!r}): pass an image reference such as 'python:3.11'")
        image = Image((_Step("from_registry", (tag.strip(),), force_build=force_build),))
        what = f"Image.from_registry({tag!r})"
        if secret is not None:
            return image._refused(f"{what}: secret= (registry credentials) is not supported: Ember's workers pull "
                                  "public images, and those of registries they reach without credentials")
        if add_python:
            return image._refused(
                f"{what}: add_python={add_python!r} is not supported: Ember has no standalone Python builds to add "
                "(they are downloaded, and this cluster may have no internet). Use an image with Python 3.11 as "
                "python3 (python:3.11-slim, or a CUDA image with it installed by setup_dockerfile_commands)")
        if setup_dockerfile_commands:
            image = image.dockerfile_commands(list(setup_dockerfile_commands), force_build=force_build)
        return image

    def _refused(self, message: str) -> "Image":
        """An image that cannot be built here, refused when it is (`_resolve`), not where it is
        declared: the declaration must not break the import of a file whose other functions work."""
        return self._then(_Step("refused", (message,)))

    # ------------------------------------------------------------------ packages

    def pip_install(self, *packages, index_url: str | None = None, extra_index_url: str | None = None,
                    find_links: str | None = None, pre: bool = False, extra_options: str = "",
                    force_build: bool = False, env: dict | None = None, secrets=None, gpu=None) -> "Image":
        """Install Python packages (with uv, into the image's Python); bytecode is compiled."""
        pkgs = _strings("pip_install", packages)
        build_env = _build_env("pip_install", env, secrets, gpu)
        if not pkgs:
            return self
        opts = _pip_options(index_url, extra_index_url, find_links, pre, extra_options)
        return self._then(_Step("pip_install", opts + pkgs, **build_env, force_build=force_build))

    def uv_pip_install(self, *packages, requirements: list[str] | None = None, find_links: str | None = None,
                       index_url: str | None = None, extra_index_url: str | None = None, pre: bool = False,
                       extra_options: str = "", force_build: bool = False, uv_version: str | None = None,
                       env: dict | None = None, secrets=None, gpu=None) -> "Image":
        """Install Python packages and the requirements files given (local paths) with uv.
        (Ember's builds always use uv: uv_version is the worker's.)"""
        if not requirements:
            return self.pip_install(*packages, index_url=index_url, extra_index_url=extra_index_url,
                                    find_links=find_links, pre=pre, extra_options=extra_options,
                                    force_build=force_build, env=env, secrets=secrets, gpu=gpu)
        files = [pathlib.Path(r).expanduser() for r in _strings("uv_pip_install(requirements=)", [requirements])]
        return self._requirements(files, _strings("uv_pip_install", packages), "uv_pip_install(requirements=)",
                                  _pip_options(index_url, extra_index_url, find_links, pre, extra_options),
                                  _build_env("uv_pip_install", env, secrets, gpu), force_build)

    def pip_install_from_requirements(self, requirements_txt: str, find_links: str | None = None, *,
                                      index_url: str | None = None, extra_index_url: str | None = None,
                                      pre: bool = False, extra_options: str = "", force_build: bool = False,
                                      env: dict | None = None, secrets=None, gpu=None) -> "Image":
        return self._requirements([pathlib.Path(requirements_txt).expanduser()], (), "pip_install_from_requirements",
                                  _pip_options(index_url, extra_index_url, find_links, pre, extra_options),
                                  _build_env("pip_install_from_requirements", env, secrets, gpu), force_build)

    def _requirements(self, paths: list[pathlib.Path], packages: tuple, what: str, opts: tuple, build_env: dict,
                      force_build: bool) -> "Image":
        # One file keeps the name it always had here (and so its layers' names).
        names = ["requirements.txt"] if len(paths) == 1 else [f"requirements-{i}.txt" for i in range(len(paths))]

        def files():
            for path in paths:
                if not path.is_file():
                    raise exception.InvalidError(f"{what}: {path} is not a file")
            return list(zip(paths, names))

        args = [a for name in names for a in ("-r", f"/.ember-files/{name}")]
        return self._then(_Step("pip_install", opts + tuple(args) + packages, **build_env,
                                force_build=force_build, local=files,
                                source=" ".join(["pip_install", *(f"-r {p}" for p in paths), *packages])))

    @_reads_local_files
    def pip_install_from_pyproject(self, pyproject_toml: str, optional_dependencies: list[str] = (), *,
                                   find_links: str | None = None, index_url: str | None = None,
                                   extra_index_url: str | None = None, pre: bool = False, extra_options: str = "",
                                   force_build: bool = False, env: dict | None = None, secrets=None,
                                   gpu=None) -> "Image":
        """Install the dependencies a local pyproject.toml lists ([project] dependencies, and
        the optional-dependencies groups named), not the project itself."""
        what = f"pip_install_from_pyproject({pyproject_toml!r})"
        project = _toml(pathlib.Path(pyproject_toml).expanduser(), what).get("project", {})
        deps = list(project.get("dependencies", []))
        optional = project.get("optional-dependencies", {})
        for group in _strings(what, [optional_dependencies]):
            if group not in optional:
                raise exception.InvalidError(f"{what}: no optional-dependencies group {group!r} (there are: "
                                             f"{', '.join(optional) or 'none'})")
            deps += optional[group]
        return self.pip_install(*deps, find_links=find_links, index_url=index_url, extra_index_url=extra_index_url,
                                pre=pre, extra_options=extra_options, force_build=force_build, env=env,
                                secrets=secrets, gpu=gpu)

    @_reads_local_files
    def uv_sync(self, uv_project_dir: str = "./", *, force_build: bool = False, groups: list[str] | None = None,
                extras: list[str] | None = None, frozen: bool = True, extra_options: str = "",
                uv_version: str | None = None, env: dict | None = None, secrets=None, gpu=None) -> "Image":
        """Install a uv project's locked dependencies (its uv.lock, exported on this machine by
        `uv export`), not the project itself; add its code with add_local_python_source.
        Without a uv.lock, the dependencies its pyproject.toml lists (with `groups`, `extras`)."""
        what = f"uv_sync({uv_project_dir!r})"
        project_dir = pathlib.Path(uv_project_dir).expanduser()
        pyproject = _toml(project_dir / "pyproject.toml", what)
        if "workspace" in pyproject.get("tool", {}).get("uv", {}):
            raise exception.InvalidError(f"{what}: uv workspaces are not supported; uv_sync() each member project")
        groups = list(_strings(f"{what} groups", [groups or []]))
        extras = list(_strings(f"{what} extras", [extras or []]))
        build_env = _build_env(what, env, secrets, gpu)
        if not (project_dir / "uv.lock").is_file():
            project = pyproject.get("project", {})
            deps = list(project.get("dependencies", []))
            for g in groups:
                deps += [d for d in pyproject.get("dependency-groups", {}).get(g, []) if isinstance(d, str)]
            for e in extras:
                deps += project.get("optional-dependencies", {}).get(e, [])
            return self.pip_install(*deps, force_build=force_build, env=env, secrets=secrets)
        argv = ["export", "--format", "requirements-txt", "--no-hashes", "--no-emit-project", "--no-header",
                "--project", str(project_dir), *[f"--group={g}" for g in groups], *[f"--extra={e}" for e in extras],
                *(["--frozen"] if frozen else ["--locked"]), *extra_options.split()]

        def files():
            import subprocess
            import tempfile

            import uv
            out = subprocess.run([uv.find_uv_bin(), *argv], capture_output=True, text=True)
            if out.returncode != 0:
                raise exception.InvalidError(f"{what}: `uv {' '.join(argv)}` failed: {out.stderr.strip()[-2000:]}")
            # Named by its content: the same export reuses one file rather than leave one per run.
            digest = hashlib.sha256(out.stdout.encode()).hexdigest()
            tmp = pathlib.Path(tempfile.gettempdir()) / f"ember-uv-sync-{digest}.txt"
            tmp.write_text(out.stdout)
            return [(tmp, "requirements.txt")]

        return self._then(_Step("pip_install", ("-r", "/.ember-files/requirements.txt"), **build_env,
                                force_build=force_build, local=files, source=f"uv_sync {project_dir}"))

    @_reads_local_files
    def poetry_install_from_file(self, poetry_pyproject_toml: str, poetry_lockfile: str | None = None, *,
                                 ignore_lockfile: bool = False, force_build: bool = False, with_: list[str] = (),
                                 without: list[str] = (), only: list[str] = (), poetry_version: str | None = "latest",
                                 old_installer: bool = False, env: dict | None = None, secrets=None,
                                 gpu=None) -> "Image":
        """Install the packages a poetry.lock pins (the main group, plus with_, minus without;
        or only `only`), not the project itself. Poetry itself is not needed."""
        what = f"poetry_install_from_file({poetry_pyproject_toml!r})"
        pyproject = pathlib.Path(poetry_pyproject_toml).expanduser()
        lockfile = pathlib.Path(poetry_lockfile).expanduser() if poetry_lockfile else pyproject.parent / "poetry.lock"
        from . import context
        if ignore_lockfile or (not lockfile.is_file() and context.is_local()):
            raise exception.InvalidError(f"{what}: Ember installs what poetry.lock pins, and there is "
                                         f"{'no lock file to use' if ignore_lockfile else f'no {lockfile}'}: "
                                         "run `poetry lock` (or use pip_install_from_pyproject)")
        _toml(pyproject, what)
        groups = set(only) if only else ({"main"} | set(with_)) - set(without)
        pins = []
        for package in _toml(lockfile, what).get("package", []):
            in_groups = set(package.get("groups", [package.get("category", "main")]))
            if not in_groups & groups:
                continue
            markers = package.get("markers", "")
            if isinstance(markers, dict):  # per group: those of the groups installed
                markers = " or ".join(f"({m})" for g, m in markers.items() if g in groups)
            pins.append(f"{package['name']}=={package['version']}" + (f"; {markers}" if markers else ""))
        return self.pip_install(*sorted(pins), force_build=force_build, env=env, secrets=secrets, gpu=gpu)

    def micromamba(self, python_version: str | None = None, force_build: bool = False) -> "Image":
        raise refused.refusal("Image.micromamba")

    def micromamba_install(self, *packages, spec_file: str | None = None, channels: list[str] = (),
                           force_build: bool = False, env: dict | None = None, secrets=None, gpu=None) -> "Image":
        raise refused.refusal("Image.micromamba_install")

    def apt_install(self, *packages, force_build: bool = False, env: dict | None = None, secrets=None,
                    gpu=None) -> "Image":
        pkgs = _strings("apt_install", packages)
        build_env = _build_env("apt_install", env, secrets, gpu)
        if not pkgs:
            return self
        return self._then(_Step("apt_install", pkgs, **build_env, force_build=force_build))

    def run_commands(self, *commands, env: dict | None = None, secrets=None, volumes=None, gpu=None,
                     force_build: bool = False) -> "Image":
        """Run shell commands in the image, in order, as one layer (with env= set for them only)."""
        cmds = _strings("run_commands", commands)
        build_env = _build_env("run_commands", env, secrets, gpu)
        if volumes:
            raise exception.InvalidError("run_commands(volumes=): build steps mount no volumes; fetch the data in "
                                         "the step (or mount the volume on the function)")
        if not cmds:
            return self
        return self._then(_Step("run_commands", cmds, **build_env, force_build=force_build))

    def run_function(self, raw_f, *, args: tuple = (), kwargs: dict | None = None, env: dict | None = None,
                     secrets=None, gpu=None, force_build: bool = False) -> "Image":
        """Run a Python function inside the image at build time (download a model, say)."""
        if not callable(raw_f):
            raise exception.InvalidError(f"run_function({raw_f!r}): pass a function")
        return self._then(_Step("run_function", (getattr(raw_f, "__qualname__", repr(raw_f)),),
                                **_build_env("run_function", env, secrets, gpu), force_build=force_build,
                                local=("function", (raw_f, tuple(args), kwargs or {}))))

    # ------------------------------------------------------------------ Dockerfiles

    @staticmethod
    def from_dockerfile(path, *, force_build: bool = False, context_dir=None, ignore=None,
                        build_args: dict[str, str] | None = None, registry_secret=None, secrets=None,
                        env: dict | None = None, gpu=None, add_python: str | None = None) -> "Image":
        """An image built from a local Dockerfile, its instructions translated into steps (see
        README, "Images"); COPY and ADD read the context directory (default: the current one)."""
        file = pathlib.Path(path).expanduser()
        what = f"Image.from_dockerfile({str(path)!r})"
        try:
            text = _read_local(file, what)
        except _NotHere:
            return _unavailable(None, what)
        return Image._from_dockerfile_text(text, str(file), None, context_dir, force_build, ignore,
                                           build_args, registry_secret, secrets, env, gpu, add_python)

    def dockerfile_commands(self, *dockerfile_commands, context_files: dict[str, str] | None = None,
                            env: dict | None = None, secrets=None, gpu=None, context_dir=None,
                            force_build: bool = False, ignore=None, build_args: dict[str, str] | None = None
                            ) -> "Image":
        """This image, then Dockerfile instructions (a "FROM base" line, if any, means this image)."""
        if context_files:
            raise exception.InvalidError("dockerfile_commands(context_files=): not supported; pass context_dir= and "
                                         "COPY from it, or use add_local_file()")
        text = "\n".join(_strings("dockerfile_commands", dockerfile_commands))
        return Image._from_dockerfile_text(text, "dockerfile_commands", self, context_dir, force_build,
                                           ignore, build_args, None, secrets, env, gpu, None)

    @staticmethod
    def _from_dockerfile_text(text: str, source: str, base: "Image | None", context_dir, force_build, ignore,
                              build_args, registry_secret, secrets, env, gpu, add_python) -> "Image":
        from . import _dockerfile
        what = f"Image.from_dockerfile({source!r})" if base is None else "dockerfile_commands"
        refusal = None
        if registry_secret is not None:
            refusal = (f"{what}: registry_secret= is not supported: Ember's workers pull public images, and those "
                       "of registries they reach without credentials")
        elif add_python:
            refusal = (f"{what}: add_python= is not supported: Ember has no standalone Python builds to add; start "
                       "FROM an image with Python 3.11 as python3, or debian:bookworm-slim (Ember's debian_slim)")
        if build_args is not None and (not isinstance(build_args, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in build_args.items())):
            raise exception.InvalidError(f"{what}: build_args={build_args!r}: pass a dict of strings")
        build = _build_env(what, env, secrets, gpu)
        # Relative COPY sources are in the context directory: the current one unless given, as Modal's.
        context = pathlib.Path(context_dir if context_dir is not None else pathlib.Path.cwd()).expanduser().absolute()
        if ignore is None:
            ignore = _dockerfile.dockerignore(context)
        _check_ignore(ignore)
        t = _dockerfile.Translator(source, context, build_args or {}, ignore)
        image = base
        for ins in _dockerfile.parse(text):
            if ins.word == "FROM" and image is None:
                image = t.base(ins, Image)
            elif ins.word == "FROM" and base is not None and ins.rest.strip().lower() == "base":
                continue
            elif ins.word == "ARG" and image is None:  # ARGs before FROM: for FROM lines only
                t.apply(Image(()), ins)
            elif image is None:
                t.fail(ins, "the Dockerfile must start with FROM (after ARG lines, if any)")
            else:
                image = t.apply(image, ins)
        if image is None:
            raise exception.InvalidError(f"{source}: no FROM line: a Dockerfile starts FROM an image")
        # env= and secrets= are for the build: every step of the Dockerfile that runs something
        # gets them; force_build= rebuilds every step of it (not those of the image it starts from).
        ours = len(base._steps) if base is not None else 0
        steps = list(image._steps)
        for i in range(ours, len(steps)):
            if steps[i].kind in ("run_commands", "pip_install", "apt_install"):
                steps[i] = steps[i]._replace(env=tuple(sorted({**dict(build["env"]), **dict(steps[i].env)}.items())),
                                             secrets=build["secrets"])
            steps[i] = steps[i]._replace(force_build=steps[i].force_build or force_build)
        image = Image(tuple(steps))
        return image._refused(refusal) if refusal else image

    def _add_files(self, files, what: str) -> "Image":
        """Local files into the image: `files` is () -> [(local path, path in the image without "/")]."""
        return self._then(_Step("add_local", path="/", args=(what,), local=files, source=what))

    def entrypoint(self, entrypoint_commands: list[str]) -> "Image":
        """What runs a container's command (Ember's runtime), as in Docker and Modal: a script
        that sets things up and ends `exec "$@"`. `entrypoint([])` clears a registry image's."""
        if not isinstance(entrypoint_commands, (list, tuple)) or not all(isinstance(c, str) and c
                                                                         for c in entrypoint_commands):
            raise exception.InvalidError(f"entrypoint({entrypoint_commands!r}): pass a list of non-empty strings")
        return self._then(_Step("entrypoint", tuple(entrypoint_commands)))

    def cmd(self, cmd: list[str]) -> "Image":
        """Accepted: Ember's containers run its runtime, never an image's CMD (as Modal's functions)."""
        if not isinstance(cmd, (list, tuple)) or not all(isinstance(c, str) for c in cmd):
            raise exception.InvalidError(f"cmd({cmd!r}): pass a list of strings")
        return self

    def shell(self, shell_commands: list[str]) -> "Image":
        raise refused.refusal("Image.shell")

    @staticmethod
    def from_aws_ecr(*args, **kwargs) -> "Image":
        raise refused.refusal("Image.from_aws_ecr")

    @staticmethod
    def from_gcp_artifact_registry(*args, **kwargs) -> "Image":
        raise refused.refusal("Image.from_gcp_artifact_registry")

    @staticmethod
    def from_scratch(*args, **kwargs) -> "Image":
        raise refused.refusal("Image.from_scratch")

    @staticmethod
    def from_id(*args, **kwargs) -> "Image":
        raise refused.refusal("Image.from_id")

    @staticmethod
    def from_name(*args, **kwargs) -> "Image":
        raise refused.refusal("Image.from_name")

    def publish(self, *args, **kwargs) -> None:
        raise refused.refusal("Image.publish")

    def pip_install_private_repos(self, *args, **kwargs) -> "Image":
        raise refused.refusal("Image.pip_install_private_repos")

    @property
    def logs(self):
        raise refused.refusal("Image.logs")

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

        return self._then(_Step("add_local", path="/", args=(remote,), local=files,
                                source=f"add_local_file {local_path} -> {remote}"))

    def add_local_dir(self, local_path, remote_path: str, *, copy: bool = True,
                      ignore: typing.Sequence[str] | typing.Callable[[pathlib.Path], bool] = ()) -> "Image":
        src = pathlib.Path(local_path).expanduser()
        remote = _abs_remote(remote_path, "add_local_dir")
        _check_ignore(ignore)

        def files():
            if not src.is_dir():
                raise exception.InvalidError(f"add_local_dir: {local_path} is not a directory")
            return _dir_files(src, ignore)

        return self._then(_Step("add_local", path=remote, local=files,
                                source=f"add_local_dir {local_path} -> {remote}"))

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

        return self._then(_Step("add_local", path=DEFAULT_WORKDIR, args=("compile", *names), local=files,
                                source=f"add_local_python_source {' '.join(names)}"))

    # ------------------------------------------------------------------ building

    @property
    def object_id(self) -> str | None:
        """Its id once built: the same recipe (steps and local files) always has the same id."""
        return self._image_id

    def build(self, app=None) -> "Image":
        """Build it now, its progress on this terminal (at once if it was built before); returns
        it, with its object_id. The control plane is app's (a running one) or EMBER_SERVER_URL's."""
        from ._client.client import Client
        from .app import build_image  # app.py imports this module
        client = app._client() if app is not None else Client.from_env()

        async def go():
            secret_ids = {id(s): await s._resolve(client) for s in self._build_secrets()}
            resolved = await asyncio.to_thread(self._resolve, client.upload_sync, secret_ids)  # hashes files
            await build_image(client, resolved, self._sources())
            return resolved.image_id

        self._image_id = client.run(go())
        return self

    def hydrate(self, client=None) -> "Image":
        """As in Modal: an image is not looked up on demand; one that was built is returned as is."""
        if self._image_id is None:
            raise exception.ExecutionError(f"{self!r} is not built: build it with image.build(), or run an app "
                                           "that uses it")
        return self

    def pipe(self, func, *args, **kwargs) -> "Image":
        """func(self, *args, **kwargs): a reusable recipe applied in a chain of build steps."""
        image = func(self, *args, **kwargs)
        if not isinstance(image, Image):
            raise exception.InvalidError(f"Image.pipe({getattr(func, '__name__', func)!r}): it returned {image!r}; "
                                         "the function must return an Image")
        return image

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

    @staticmethod
    def _of_snapshot(image: api_pb2.Image) -> "Image":
        """The image sb.snapshot_filesystem() returned (its steps resolved already: the sandbox's
        image's, then the layer of what the sandbox changed). Steps added to it build on it."""
        return Image((_Step("snapshot", (image.image_id,), local=image),))

    def _sources(self) -> list[str]:
        """Where each step's local files come from ("" for a step without), for its build's progress."""
        return [source for s in self._steps
                for source in ([""] * len(s.local.steps) if s.kind == "snapshot" else [s.source])]

    def _build_secrets(self) -> list:
        """The Secret objects its build steps name (to resolve to ids before `_resolve`)."""
        return [secret for s in self._steps for secret in s.secrets]

    def _resolve(self, upload: typing.Callable[[bytes], str],
                 secret_ids: dict[int, str] | None = None) -> api_pb2.Image:
        """Name every layer and upload the local content the steps need; secret_ids: the id of
        each of `_build_secrets()`, by id() of the Secret object."""
        secret_ids = secret_ids or {}
        steps = []
        parent = ""
        for s in self._steps:
            if s.kind == "refused":
                raise exception.InvalidError(s.args[0])
            if s.kind == "snapshot":  # resolved by the control plane that took it
                steps.extend(s.local.steps)
                parent = s.local.image_id
                continue
            blob_id, digest = "", ""
            if s.local is not None:
                data, digest = _pack(s)
                blob_id = upload(data)
            layer = layer_id(parent, s.kind, s.args, s.env, s.path, digest)
            steps.append(api_pb2.ImageStep(kind=api_pb2.ImageStep.Kind.Value(s.kind.upper()), args=s.args,
                                           env=dict(s.env), path=s.path,
                                           blob_id=blob_id, force_build=s.force_build, layer_id=layer,
                                           secret_ids=[secret_ids[id(secret)] for secret in s.secrets]))
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
    # An ignored directory is skipped whole, unless the ignore may take back files inside it
    # (a FilePatternMatcher with "!" patterns, or an inverted one).
    prune = getattr(ignore, "can_prune_directories", lambda: True)()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames
                             if not prune or not _ignored(os.path.normpath(os.path.join(rel_dir, d)), ignore))
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
