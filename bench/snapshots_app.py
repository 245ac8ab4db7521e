"""The classes the snapshot benchmark calls: the same ~3 s of state building in @enter(snap=True),
one with a memory snapshot and one without."""

import hashlib
import os
import threading
import time

import ember

app = ember.App("bench-snapshots")
STATE_MB = 300
BUILD_SECONDS = 3.0


def build(self):
    """A model's load, in effect: a few hundred MB filled, then digested until about 3 s have passed."""
    start = time.monotonic()
    self.weights = bytearray(os.urandom(1 << 20)) * STATE_MB
    digest = hashlib.sha256()
    while time.monotonic() - start < BUILD_SECONDS:
        digest.update(self.weights[:64 << 20])
    self.digest = digest.hexdigest()


def predict(self, x):
    return self.weights[x]


def leave(self):
    """The container ends once it answered: the next call needs a new one (a cold start)."""
    threading.Timer(0.1, os._exit, (0,)).start()


def model(name: str) -> type:
    """The class, by that name: the same hooks and methods for both."""
    return type(name, (), {"build": ember.enter(snap=True)(build), "predict": ember.method()(predict),
                           "leave": ember.method()(leave)})


Snapped = app.cls(enable_memory_snapshot=True)(model("Snapped"))
Plain = app.cls()(model("Plain"))
