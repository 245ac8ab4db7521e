"""Hello, Ember: `ember run examples/hello.py`."""

import ember

app = ember.App("hello")


@app.function(retries=2, timeout=60)
def square(x: int) -> int:
    print(f"squaring {x} in a container")
    return x * x


@app.local_entrypoint()
def main(n: int = 10):
    print("square.remote(7) =", square.remote(7))
    print(f"sum of squares below {n} =", sum(square.map(range(n))))
