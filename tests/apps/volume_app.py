"""Functions that share files through a volume."""

import os

import ember

app = ember.App("volume-tests")
vol = ember.Volume.from_name("shared-files", create_if_missing=True)


@app.function(volumes={"/data": vol})
def write(name, text, commit=True):
    os.makedirs(os.path.dirname(f"/data/{name}") or "/data", exist_ok=True)
    with open(f"/data/{name}", "w") as f:
        f.write(text)
    if commit:
        vol.commit()
    return sorted(os.listdir("/data"))


@app.function(volumes={"/data": vol})
def read(name, reload=False):
    if reload:
        vol.reload()
    try:
        with open(f"/data/{name}") as f:
            return f.read()
    except FileNotFoundError:
        return None


@app.function(volumes={"/data": vol})
def crash_after_writing(name):
    with open(f"/data/{name}", "w") as f:
        f.write("never committed")
    os._exit(3)
