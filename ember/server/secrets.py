"""Secrets: sets of environment variables, encrypted at rest, given only to the containers of
the functions that name them.

The key (AES-256-GCM) is made once per control plane and kept beside the database in its own
file, readable by its owner only: a copy of the database alone reveals no value. Values are
never logged, never put in error messages and never listed; only the containers that use a
secret receive them (in their ContainerInit).
"""

import json
import os
import pathlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._ids import new_id
from ..proto import api_pb2
from .objects import ObjectError

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def load_key(path: pathlib.Path) -> bytes:
    """The control plane's secret key, made on first use (mode 0600)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        key = AESGCM.generate_key(bit_length=256)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


class Secrets:
    def __init__(self, store, key_path: pathlib.Path):
        self.store = store
        self.aead = AESGCM(load_key(key_path))

    def _encrypt(self, secret_id: str, env: dict) -> bytes:
        nonce = os.urandom(12)
        # The secret's id is bound in as associated data: a ciphertext moved to another row fails.
        return nonce + self.aead.encrypt(nonce, json.dumps(env).encode(), secret_id.encode())

    def _decrypt(self, secret_id: str, blob: bytes) -> dict:
        return json.loads(self.aead.decrypt(blob[:12], blob[12:], secret_id.encode()))

    def create(self, workspace: str, req: api_pb2.SecretCreateRequest) -> api_pb2.SecretRef:
        name = req.name or None
        if name is not None:
            if not set(name) <= NAME_CHARS or len(name) > 64:
                raise ObjectError(f"secret name {name!r}: use 1 to 64 letters, digits, '-', '_' or '.'", False)
            if self.store.secret_by_name(workspace, name) is not None and not (req.force or req.merge):
                raise ObjectError(f"a secret named {name!r} exists already; pass --force (force=True) to replace it",
                                  False)
        for k in req.env:
            if not k or "=" in k or "\0" in k:
                raise ObjectError(f"{k!r} is not a valid environment variable name", False)
        env = dict(req.env)
        if req.merge:  # Secret.update: the existing secret's keys, these set over them
            row = self.store.secret_by_name(workspace, name) if name is not None else None
            if row is None:
                raise ObjectError(f"there is no secret named {req.name!r} to update: create it with "
                                  f"`ember secret create {req.name or 'NAME'} KEY=VALUE ...` or Secret.objects.create")
            env = {**self._decrypt(*row), **env}
        # A named secret keeps its id through updates (and deletion): the functions that name it
        # by id get the new values in their next containers.
        secret_id = (self.store.secret_id_for_name(workspace, name) if name is not None else None) or new_id("st")
        self.store.put_secret(secret_id, workspace, name, self._encrypt(secret_id, env), len(env))
        return api_pb2.SecretRef(secret_id=secret_id, name=req.name)

    def lookup(self, workspace: str, req: api_pb2.SecretLookupRequest) -> api_pb2.SecretRef:
        row = self.store.secret_by_name(workspace, req.name)
        if row is None:
            names = [n for n, _, _ in self.store.list_secrets(workspace)]
            raise ObjectError(f"there is no secret named {req.name!r} (there are: {', '.join(names) or 'none'}); "
                              f"create it with `ember secret create {req.name} KEY=VALUE ...`")
        secret_id, blob = row
        missing = [k for k in req.required_keys if k not in self._decrypt(secret_id, blob)]
        if missing:
            raise ObjectError(f"secret {req.name!r} lacks the required keys {', '.join(missing)}", False)
        return api_pb2.SecretRef(secret_id=secret_id, name=req.name)

    def listing(self, workspace: str) -> list[api_pb2.SecretInfo]:
        return [api_pb2.SecretInfo(name=n, created_at=t, num_keys=k) for n, t, k in self.store.list_secrets(workspace)]

    def delete(self, workspace: str, name: str):
        if not self.store.delete_secret(workspace, name):
            raise ObjectError(f"there is no secret named {name!r}")

    def owned(self, workspace: str, secret_id: str):
        """The secret exists and belongs to the workspace; else not found."""
        row = self.store.secret_ciphertext(secret_id)
        if row is None or row[0] != workspace:
            raise ObjectError(self._gone(workspace, secret_id))

    def env_for(self, secret_ids, workspace: str) -> dict[str, str]:
        """The variables of these secrets of the workspace, later ones winning (for a container's
        init). SecretGone if one no longer exists: its containers cannot start as asked."""
        env = {}
        for sid in secret_ids:
            row = self.store.secret_ciphertext(sid)
            if row is None or row[0] != workspace:
                raise SecretGone(self._gone(workspace, sid))
            env.update(self._decrypt(sid, row[1]))
        return env

    def _gone(self, workspace: str, secret_id: str) -> str:
        deleted = self.store.deleted_secret(secret_id)
        if deleted is not None and deleted[0] == workspace:
            name = deleted[1]
            return f"secret {name!r} was deleted: create it again with `ember secret create {name} KEY=VALUE ...`"
        return (f"there is no secret with id {secret_id} (it was deleted or replaced): run or deploy the app again "
                "to use the secrets it names now")


class SecretGone(Exception):
    """A function names a secret that no longer exists (the message says which, and what to do)."""
