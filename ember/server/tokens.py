"""Proxy auth tokens: what a web endpoint with requires_proxy_auth=True asks of every request.

A token is a key (sent as the Ember-Key header) and a secret (Ember-Secret); Modal's header
names (Modal-Key, Modal-Secret) work too. Only a hash of the secret is stored, and the secret
is shown once, when the token is made.
"""

import hashlib
import hmac
import secrets
import time

from .._ids import new_id
from ..proto import api_pb2

KEY_HEADERS = (b"ember-key", b"modal-key")
SECRET_HEADERS = (b"ember-secret", b"modal-secret")


def _hash(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


class ProxyTokens:
    """Each token belongs to a workspace and opens only that workspace's endpoints."""

    def __init__(self, store):
        self.store = store
        self.tokens = {token_id: (ws, h) for token_id, ws, h, _ in store.proxy_tokens()}

    def create(self, workspace: str) -> api_pb2.ProxyToken:
        token_id, secret, now = new_id("wk"), "ws-" + secrets.token_urlsafe(24), time.time()
        self.tokens[token_id] = (workspace, _hash(secret.encode()))
        self.store.add_proxy_token(token_id, workspace, self.tokens[token_id][1], now)
        return api_pb2.ProxyToken(token_id=token_id, secret=secret, created_at=now)

    def list(self, workspace: str) -> api_pb2.ProxyTokens:
        return api_pb2.ProxyTokens(tokens=[api_pb2.ProxyToken(token_id=t, created_at=at)
                                           for t, ws, _, at in self.store.proxy_tokens() if ws == workspace])

    def delete(self, workspace: str, token_id: str):
        if self.tokens.get(token_id, ("",))[0] != workspace:
            raise LookupError(f"there is no proxy token {token_id!r} (see `ember proxy-token list`)")
        del self.tokens[token_id]
        self.store.delete_proxy_token(token_id)

    def check(self, headers, workspace: str) -> bool:
        """Whether the request's headers carry a valid token of the workspace."""
        key = secret = None
        for name, value in headers:
            if name in KEY_HEADERS:
                key = value.decode("latin-1")
            elif name in SECRET_HEADERS:
                secret = value
        ws, expected = self.tokens.get(key, ("", None)) if key else ("", None)
        return (expected is not None and secret is not None and ws == workspace
                and hmac.compare_digest(expected, _hash(secret)))
