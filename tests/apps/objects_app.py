"""Functions that use Dicts and Queues from inside their containers."""

import ember

app = ember.App("objects-tests")


@app.function()
def record(d, key, value):
    d[key] = value
    return d.get(key)


@app.function()
def bump_by_name(name, key):
    d = ember.Dict.from_name(name)
    d.put(key, d.get(key, 0) + 1)
    return d[key]


@app.function()
def produce(q, start, count):
    q.put_many(list(range(start, start + count)))
    return count


@app.function()
def consume(q):
    """Take items until the queue stays empty for a while; the items this consumer got."""
    got = []
    while batch := q.get_many(50, timeout=3):
        got.extend(batch)
    return got
