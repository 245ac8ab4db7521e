"""`ember serve FILE`: run an app with its web endpoints live, and redeploy it on every save.

The app's files (FILE, and every module it imported from its folder tree) are watched; on a
change the file is imported afresh and the app created again: its web endpoints take over
their URLs (which stay the same), and the previous version finishes the requests it is running,
then stops. A file that fails to import (a syntax error, say) is reported and the last good
version keeps serving. Ctrl-C stops the app and its containers.
"""

import pathlib
import sys
import time
import traceback

from .. import config, exception
from .._client.client import Client
from .._client.local_cluster import LocalCluster
from ..app import _RunningApp
from .run import find_app, import_file, module_name

POLL = 0.1  # seconds between looks at the files' modification times


def app_modules(file: pathlib.Path, root: pathlib.Path) -> set[pathlib.Path]:
    """FILE and the modules imported from under root: what a change to would change the app."""
    files = {file}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and pathlib.Path(path).resolve().is_relative_to(root):
            files.add(pathlib.Path(path).resolve())
    return files


def mtimes(files: set[pathlib.Path]) -> dict[pathlib.Path, int]:
    found = {}
    for path in files:
        try:
            found[path] = path.stat().st_mtime_ns
        except FileNotFoundError:
            pass
    return found


def start_version(path: str, root: pathlib.Path, client: Client) -> _RunningApp:
    """Import the file afresh (its modules under root too) and create its app."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and pathlib.Path(file).resolve().is_relative_to(root):
            del sys.modules[name]
    app = find_app(import_file(path))
    running = _RunningApp(app, client)
    client.run(running.start())
    app._running = running
    return running


def serve(path: str) -> int:
    file = pathlib.Path(path).resolve()
    if not file.is_file():
        print(f"ember serve: {path}: no such file", file=sys.stderr)
        return 2
    root, _ = module_name(file)
    cluster = LocalCluster.start() if config.server_url() is None else None
    current = None
    try:
        client = Client.from_env()
        files = mtimes({file})
        try:
            current = start_version(path, root, client)
        except exception.ConnectionError as e:
            print(f"ember serve: {e}", file=sys.stderr)
            return 1
        except Exception:
            traceback.print_exc()
            print("ember serve: fix the error and save: it is loaded again", file=sys.stderr)
        watched = app_modules(file, root)
        # What it imported, as it was then (a file saved meanwhile counts as changed).
        files = mtimes(watched) | files
        print(f"ember serve: watching {len(watched)} file(s) under {root} for changes; Ctrl-C stops",
              file=sys.stderr, flush=True)
        while True:
            time.sleep(POLL)
            now = mtimes(watched)
            if now == files:
                continue
            changed = sorted(str(p.relative_to(root)) for p in set(now) | set(files) if now.get(p) != files.get(p))
            print(f"ember serve: {', '.join(changed)} changed: redeploying", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                new = start_version(path, root, client)
            except Exception:
                traceback.print_exc()
                print("ember serve: the last good version keeps serving", file=sys.stderr, flush=True)
                new = None
            watched = app_modules(file, root)
            files = mtimes(watched) | now
            if new is None:
                continue
            if current is not None:
                client.run(current.drain())
            current = new
            print(f"ember serve: redeployed in {time.monotonic() - t0:.2f}s", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("ember serve: stopping", file=sys.stderr)
        return 0
    finally:
        if current is not None:
            client.run(current.stop())
        if cluster is not None:
            cluster.stop()
