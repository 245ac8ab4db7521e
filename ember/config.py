"""Settings read from the environment, in one place."""

import os
import pathlib

# Payloads larger than this travel through the blob store instead of inside messages.
BLOB_THRESHOLD = 2 * 1024 * 1024
# gRPC message ceiling: above the blob threshold, with room for the rest of a message.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
BLOB_CHUNK = 1024 * 1024


def ember_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("EMBER_HOME") or pathlib.Path.home() / ".ember")


def server_url() -> str | None:
    """The control plane the client talks to; None means: start an embedded one."""
    return os.environ.get("EMBER_SERVER_URL") or None


def token() -> tuple[str, str] | None:
    """The caller's token (id, secret): EMBER_TOKEN_ID and EMBER_TOKEN_SECRET."""
    token_id, secret = os.environ.get("EMBER_TOKEN_ID"), os.environ.get("EMBER_TOKEN_SECRET")
    return (token_id, secret) if token_id and secret else None


def grpc_target(url: str) -> str:
    """Turn an Ember server URL into a gRPC target.

    Accepts host:port, grpc://host:port, http://host:port and unix:/path (or unix:///path).
    """
    if url.startswith("unix:"):
        return url
    for scheme in ("grpc://", "http://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    return url.rstrip("/")


GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
    # Keep idle streams (workers, containers, the call stream) alive through NATs and idling.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
