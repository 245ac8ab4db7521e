"""How the `ember` command reports a failure.

Ember's own errors (ember.exception.Error: a missing secret, an unreachable server, an app
that is not running, ...) are one line naming the cause, `ember: ...`, and the container's
traceback where one goes with it; the command exits 1. A user's own exception shows its
traceback as Python would show it, from the user's code on: the frames of the command
itself (and of importlib, importing the user's file) are left out.
"""

import os
import sys
import traceback

from .. import exception

_EMBER = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def report(e: BaseException):
    if isinstance(e, exception.Error):
        print(f"ember: {e}", file=sys.stderr)
        for note in getattr(e, "__notes__", ()):
            print(note, file=sys.stderr)
        return
    tb = e.__traceback__
    while tb is not None and _ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb)


def _ours(filename: str) -> bool:
    return filename.startswith((_EMBER, "<frozen importlib"))
