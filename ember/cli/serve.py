"""`ember serve FILE`: run an app with its web endpoints live, and redeploy it on every save.

The app's files (FILE, and every module it imported from its folder tree) are watched; on a
change the file is imported afresh and the app created again: its web endpoints take over
their URLs (which stay the same), and the previous version finishes the requests it is running,
then stops. A file that fails to import (a syntax error, say) is reported and the last good
version keeps serving. Ctrl-C stops the app and its containers.

The watching is the operating system's (through watchfiles): the folders of the app's files are
watched, and a save made while a version is being started counts for the next one.
"""

import pathlib
import sys
import time

import watchfiles

from .. import config
from .._client.client import Client
from .._client.local_cluster import LocalCluster
from ..app import _RunningApp
from .errors import report
from .run import find_app, import_file, module_name


def app_modules(file: pathlib.Path, root: pathlib.Path) -> set[pathlib.Path]:
    """FILE and the modules imported from under root: what a change to would change the app."""
    files = {file}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and pathlib.Path(path).resolve().is_relative_to(root):
            files.add(pathlib.Path(path).resolve())
    return files


def start_version(path: str, root: pathlib.Path, client: Client) -> _RunningApp | None:
    """Import the file afresh (its modules under root too) and create its app; None, the error
    reported, if that fails (a syntax error, an image that does not build)."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and pathlib.Path(file).resolve().is_relative_to(root):
            del sys.modules[name]
    running = None
    try:
        app = find_app(import_file(path))
        running = _RunningApp(app, client)
        client.run(running.start())
    except Exception as e:  # noqa: BLE001 - reported; the last good version keeps serving
        if running is not None:
            client.run(running.stop())
        report(e)
        return None
    app._running = running
    return running


def serve(path: str) -> int:
    file = pathlib.Path(path).resolve()
    if not file.is_file():
        print(f"ember: {path}: no such file", file=sys.stderr)
        return 2
    root, _ = module_name(file)
    cluster = LocalCluster.start() if config.server_url() is None else None
    current = None
    try:
        client = Client.from_env()
        current = start_version(path, root, client)
        if current is None:
            print("ember serve: fix the error and save: it is loaded again", file=sys.stderr)
        watched = app_modules(file, root)  # updated in place: what the filter below sees
        print(f"ember serve: watching {len(watched)} file(s) under {root} for changes; Ctrl-C stops",
              file=sys.stderr, flush=True)

        def is_watched(_change, p: str) -> bool:
            return pathlib.Path(p) in watched

        while True:
            folders = {p.parent for p in watched}
            for changes in watchfiles.watch(*folders, recursive=False, watch_filter=is_watched):
                changed = sorted({str(pathlib.Path(p).relative_to(root)) for _, p in changes})
                print(f"ember serve: {', '.join(changed)} changed: redeploying", file=sys.stderr, flush=True)
                t0 = time.monotonic()
                new = start_version(path, root, client)
                watched.clear()
                watched.update(app_modules(file, root))
                if new is None:
                    print("ember serve: the last good version keeps serving", file=sys.stderr, flush=True)
                else:
                    if current is not None:
                        client.run(current.drain())
                    current = new
                    print(f"ember serve: redeployed in {time.monotonic() - t0:.2f}s", file=sys.stderr, flush=True)
                if {p.parent for p in watched} != folders:
                    break  # it imports a module from another folder now: watch that one too
    except KeyboardInterrupt:
        print("ember serve: stopping", file=sys.stderr)
        return 0
    finally:
        if current is not None:
            client.run(current.stop())
        if cluster is not None:
            cluster.stop()
