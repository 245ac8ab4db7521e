"""Object ids: a short prefix that names the kind of object, then random hex."""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(10)}"
