"""`ember run FILE[::NAME] [--arg value ...]`."""

import argparse
import importlib.util
import inspect
import pathlib
import sys
import time

from .. import exception, function
from ..app import App, LocalEntrypoint
from ..function import Function
from .errors import report


def module_name(file: pathlib.Path) -> tuple[pathlib.Path, str]:
    """The folder to import a file from, and its module name there (package.module inside packages)."""
    parts = [file.stem]
    root = file.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    return root, ".".join(parts)


def import_file(path: str):
    """Import a file as a module named as Python would (package.module inside packages)."""
    file = pathlib.Path(path).resolve()
    if not file.is_file():
        raise exception.InvalidError(f"{path}: no such file")
    root, name = module_name(file)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if (file.parent / "__init__.py").exists():  # inside a package: import it as Python would
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def find_app(module) -> App:
    apps = {k: v for k, v in vars(module).items() if isinstance(v, App)}
    if "app" in apps:
        return apps["app"]
    if len(apps) == 1:
        return next(iter(apps.values()))
    if not apps:
        raise exception.InvalidError(f"{module.__file__} defines no ember.App")
    raise exception.InvalidError(f"{module.__file__} defines several apps ({', '.join(apps)}); name one `app`")


def find_target(app: App, name: str | None):
    if name:
        target = app._entrypoints.get(name) or app._functions.get(name)
        if target is None:
            known = sorted(set(app._entrypoints) | set(app._functions))
            raise exception.InvalidError(f"app has no function or local entrypoint {name!r}; "
                                         f"it has: {', '.join(known) or 'none'}")
        return target
    if len(app._entrypoints) == 1:
        return next(iter(app._entrypoints.values()))
    if not app._entrypoints and len(app._functions) == 1:
        return next(iter(app._functions.values()))
    known = sorted(set(app._entrypoints) | set(app._functions))
    raise exception.InvalidError(f"say which one to run, as FILE::NAME; the app has: {', '.join(known) or 'nothing'}")


def parse_args(raw_f, argv: list[str], prog: str) -> dict:
    """Command-line options from the function's signature: --name value."""
    parser = argparse.ArgumentParser(prog=prog)
    for p in inspect.signature(raw_f).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if p.annotation is not inspect.Parameter.empty else None
        default = None if p.default is inspect.Parameter.empty else p.default
        if ann is None and default is not None:
            ann = type(default)
        flags = [f"--{p.name}"] + ([f"--{p.name.replace('_', '-')}"] if "_" in p.name else [])
        required = p.default is inspect.Parameter.empty
        if ann is bool:
            parser.add_argument(*flags, dest=p.name, action=argparse.BooleanOptionalAction, default=default,
                                required=required)
        else:
            parser.add_argument(*flags, dest=p.name, type=ann if ann in (int, float, str) else str,
                                default=default, required=required)
    return vars(parser.parse_args(argv))


def run(target: str, argv: list[str]) -> int:
    path, _, name = target.partition("::")
    try:
        app = find_app(import_file(path))
        obj = find_target(app, name or None)
    except exception.InvalidError as e:  # what the command line names is not there
        print(f"ember: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the user's file failed to import
        report(e)
        return 1
    raw = obj.raw_f if isinstance(obj, LocalEntrypoint) else obj.get_raw_f()
    kwargs = parse_args(raw, argv, f"ember run {target}")
    started = time.monotonic()
    try:
        with app.run():
            if isinstance(obj, Function):
                if obj._is_generator:
                    for item in obj.remote_gen(**kwargs):
                        print(item)
                else:
                    obj.remote(**kwargs)
            else:
                raw(**kwargs)
    except KeyboardInterrupt:
        print("ember: interrupted; the app was stopped", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the user's error, or Ember's: reported as errors.py says
        report(e)
        _summary(started)
        return 1
    _summary(started)
    return 0


def _summary(started: float):
    done, failed = function.outcomes["done"], function.outcomes["failed"]
    calls = done + failed  # whose results came back to this process
    print(f"ember: done in {time.monotonic() - started:.1f}s: {calls} call{'s' if calls != 1 else ''}, "
          f"{failed} failed", file=sys.stderr)
