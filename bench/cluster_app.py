"""The function bench/cluster.py calls: its simulated containers answer ident(x) with x."""

import ember

app = ember.App("bench-cluster")


# One CPU each, so that a simulated worker offering --cpu 10 holds 10 of its containers.
@app.function(cpu=1.0, memory=256)
def ident(x):
    return x
