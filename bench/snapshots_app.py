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


def build(model):
    """A model's load, in effect: a few hundred MB filled, then digested until about 3 s have passed."""
    start = time.monotonic()
    model.weights = bytearray(os.urandom(1 << 20)) * STATE_MB
    digest = hashlib.sha256()
    while time.monotonic() - start < BUILD_SECONDS:
        digest.update(model.weights[:64 << 20])
    model.digest = digest.hexdigest()


def leave():
    """The container ends once it answered: the next call needs a new one (a cold start)."""
    threading.Timer(0.1, os._exit, (0,)).start()


@app.cls(enable_memory_snapshot=True)
class Snapped:
    @ember.enter(snap=True)
    def build(self):
        build(self)

    @ember.method()
    def predict(self, x):
        return self.weights[x]

    @ember.method()
    def leave(self):
        leave()


@app.cls()
class Plain:
    @ember.enter(snap=True)
    def build(self):
        build(self)

    @ember.method()
    def predict(self, x):
        return self.weights[x]

    @ember.method()
    def leave(self):
        leave()
