"""Classes for the class tests: enter/exit hooks, methods, parameters."""

import os

import ember

app = ember.App("cls-tests")
ENTERED = 0


@app.cls()
class Model:
    size: str = ember.parameter(default="small")
    marker: str = ember.parameter(default="")

    @ember.enter()
    def load(self):
        global ENTERED
        ENTERED += 1
        self.weights = {"small": 1, "large": 10}[self.size]

    @ember.method()
    def predict(self, x):
        return x * self.weights

    @ember.method()
    def info(self):
        return {"pid": os.getpid(), "entered": ENTERED, "size": self.size}

    @ember.method()
    def count(self, n):
        for i in range(n):
            yield i * self.weights

    @ember.exit()
    def close(self):
        if self.marker:
            with open(self.marker, "w") as f:
                f.write(f"closed {self.size}")


class LoadError(Exception):
    pass


@app.cls()
class Broken:
    @ember.enter()
    def load(self):
        raise LoadError("the weights are missing")

    @ember.method()
    def predict(self, x):
        return x
