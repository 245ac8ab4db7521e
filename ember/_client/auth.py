"""Credentials on the wire: every RPC carries the caller's token as gRPC metadata.

A token is an id and a secret. People and programs get theirs from the environment or the
active profile (config.token()); a worker from its token file; a container from its worker,
which got it from the control plane when it asked for the container.
"""

import functools
import json
import pathlib

from .. import exception

TOKEN_ID_KEY, TOKEN_SECRET_KEY = "ember-token-id", "ember-token-secret"


def metadata(token: tuple[str, str] | None) -> tuple[tuple[str, str], ...]:
    return () if token is None else ((TOKEN_ID_KEY, token[0]), (TOKEN_SECRET_KEY, token[1]))


class Authed:
    """A gRPC stub whose every call carries the credential (metadata bound once per method)."""

    def __init__(self, stub, token: tuple[str, str] | None):
        self._stub = stub
        self._metadata = metadata(token)

    def __getattr__(self, name):
        method = functools.partial(getattr(self._stub, name), metadata=self._metadata)
        setattr(self, name, method)  # found here from now on: no partial per call
        return method


def read_token_file(path: str | pathlib.Path) -> tuple[str, str]:
    """(token_id, token_secret) from a JSON file such as `ember token new --json` writes."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
        return data["token_id"], data["token_secret"]
    except FileNotFoundError:
        raise exception.AuthError(f"the token file {path} does not exist") from None
    except (ValueError, KeyError, TypeError):
        raise exception.AuthError(f"the token file {path} is not a JSON object with token_id and token_secret "
                                  "(as `ember token new --json` writes)") from None
