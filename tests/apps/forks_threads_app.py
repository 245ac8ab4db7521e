"""A module that starts a thread as it is imported: a fork of it would not be sound (the thread
would be missing in the child, and any lock it held, held forever), so its containers start
the usual way, and the worker says why once."""

import os
import threading

import ember

app = ember.App("fork-threads-tests")
IMPORTED_BY = os.getpid()
threading.Thread(target=threading.Event().wait, name="started-at-import", daemon=True).start()


@app.function(single_use_containers=True)
def who_imported_me():
    return {"pid": os.getpid(), "imported_by": IMPORTED_BY}
