"""A module that starts a thread as it is imported, on the container backend: its containers
start from spares, not forks, and the worker says why once (tests/test_container_forks.py)."""

import os
import threading

import ember

app = ember.App("container-fork-threads-tests")
IMPORTED = os.urandom(8).hex()
threading.Thread(target=threading.Event().wait, name="started-at-import", daemon=True).start()


@app.function(image=ember.Image.debian_slim(), single_use_containers=True)
def who_imported_me():
    return IMPORTED
