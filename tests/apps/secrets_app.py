"""Functions that read their secrets from the environment."""

import hashlib
import os

import ember

app = ember.App("secrets-tests")


@app.function(secrets=[ember.Secret.from_name("api", required_keys=["TOKEN"]),
                       ember.Secret.from_dict({"MODE": "test"})])
def read_env():
    """The variables, the token as its hash: a result is stored by the control plane, and the
    test checks that the token itself is stored nowhere."""
    env = {k: os.environ.get(k) for k in ("TOKEN", "REGION", "MODE")}
    env["TOKEN"] = hashlib.sha256(env["TOKEN"].encode()).hexdigest() if env["TOKEN"] else None
    return env
