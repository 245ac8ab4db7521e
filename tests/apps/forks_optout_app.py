"""A module that opts out of warm parents: its containers always import it themselves."""

import os

import ember

__ember_fork__ = False

app = ember.App("fork-optout-tests")
IMPORTED_BY = os.getpid()


@app.function(single_use_containers=True)
def who_imported_me():
    return {"pid": os.getpid(), "imported_by": IMPORTED_BY}
