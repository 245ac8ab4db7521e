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
    def __init__(self, store):
        self.store = store
        self.hashes = {token_id: h for token_id, h, _ in store.proxy_tokens()}

    def create(self) -> api_pb2.ProxyToken:
        token_id, secret, now = new_id("wk"), "ws-" + secrets.token_urlsafe(24), time.time()
        self.hashes[token_id] = _hash(secret.encode())
        self.store.add_proxy_token(token_id, self.hashes[token_id], now)
        return api_pb2.ProxyToken(token_id=token_id, secret=secret, created_at=now)

    def list(self) -> api_pb2.ProxyTokens:
        return api_pb2.ProxyTokens(tokens=[api_pb2.ProxyToken(token_id=t, created_at=at)
                                           for t, _, at in self.store.proxy_tokens()])

    def delete(self, token_id: str):
        if self.hashes.pop(token_id, None) is None:
            raise LookupError(f"there is no proxy token {token_id!r} (see `ember token list`)")
        self.store.delete_proxy_token(token_id)

    def check(self, headers) -> bool:
        """Whether the request's headers carry a valid token."""
        key = secret = None
        for name, value in headers:
            if name in KEY_HEADERS:
                key = value.decode("latin-1")
            elif name in SECRET_HEADERS:
                secret = value
        expected = self.hashes.get(key) if key else None
        return expected is not None and secret is not None and hmac.compare_digest(expected, _hash(secret))
