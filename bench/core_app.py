"""The trivial function the core benchmark calls."""

import ember

app = ember.App("bench-core")


@app.function(max_containers=4)
def ident(x):
    return x
