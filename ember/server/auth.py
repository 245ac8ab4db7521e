"""Who is calling: workspaces, tokens, and the credentials of workers and containers.

Every request carries a credential in its gRPC metadata (`ember-token-id`, `ember-token-secret`).
The control plane keeps only the SHA-256 of each secret, so a copy of its database lets no one in.
A credential is one of:
  - an admin token: manages workspaces and tokens, and works in its own workspace;
  - a workspace token: does everything inside its workspace and nothing outside it;
  - a worker token: lets a worker join (and bounds what the worker may offer);
  - a container credential, made when the control plane starts a container and valid while that
    container lives: its own stream, and its app's workspace rights for the calls it makes.
Another workspace's objects are not found, exactly as if they did not exist.
"""

import hashlib
import hmac
import json
import os
import pathlib
import re
import secrets
import time
from dataclasses import dataclass

from .._ids import new_id

TOKEN_ID_KEY, TOKEN_SECRET_KEY = "ember-token-id", "ember-token-secret"
ADMIN, WORKSPACE, WORKER, CONTAINER = "admin", "workspace", "worker", "container"
MAIN = "main"  # the workspace a new control plane makes, with its first admin token
WORKSPACE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
HOW_TO_GET_ONE = ("set EMBER_TOKEN_ID and EMBER_TOKEN_SECRET (or `ember token set`) to a token that an admin made "
                  "with `ember token new`; a new control plane writes its first admin token to "
                  "<data-dir>/admin-token.json")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Unauthenticated(Exception):
    """The request has no valid credential: it says what is missing and how to get one."""


class Forbidden(Exception):
    """The caller is who it says, but may not do this."""


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    workspace: str   # whose objects it reaches ('' for a worker)
    token_id: str    # a container's is its container id

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@dataclass(slots=True)
class Token:
    token_id: str
    secret_hash: str
    role: str
    workspace: str
    name: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    max_cpu: float | None = None        # a worker token: the most a worker may offer
    max_memory_mb: int | None = None

    def row(self) -> tuple:
        return (self.token_id, self.secret_hash, self.role, self.workspace, self.name, self.created_at,
                self.expires_at, self.revoked_at, self.max_cpu, self.max_memory_mb)


@dataclass(slots=True)
class Workspace:
    name: str
    created_at: float
    max_containers: int | None = None
    max_cpu: float | None = None
    max_memory_mb: int | None = None
    max_gpus: int | None = None


class Identity:
    def __init__(self, store, clock=time.time):
        self.store = store
        self.clock = clock
        self.workspaces = {row[0]: Workspace(*row) for row in store.workspaces()}
        self.tokens = {row[0]: Token(*row) for row in store.tokens()}
        # Live containers' credentials: container_id -> (hash of its secret, its app's workspace).
        self.containers: dict[str, tuple[str, str]] = {}

    # ---- who is calling

    def authenticate(self, metadata, roles: tuple[str, ...]) -> Principal:
        """The principal the request's credential proves, if it is one of `roles`."""
        token_id = secret = None
        for key, value in metadata or ():
            if key == TOKEN_ID_KEY:
                token_id = value
            elif key == TOKEN_SECRET_KEY:
                secret = value
        if not token_id or not secret:
            raise Unauthenticated(f"this request carries no Ember token: {HOW_TO_GET_ONE}")
        principal = self._verify(token_id, secret)
        if principal.role not in roles:
            raise Forbidden(f"a {principal.role} credential cannot make this request (it needs "
                            f"{' or '.join(r + ' credential' for r in roles)})")
        return principal

    def check(self, who: Principal):
        """Raise Unauthenticated if who's credential stopped being valid since it was shown (a
        long-lived stream's token revoked or expired, its container gone)."""
        if who.role == CONTAINER:
            if who.token_id not in self.containers:
                raise Unauthenticated(f"container {who.token_id} has ended: its credential is no longer valid")
            return
        self._still_valid(self.tokens[who.token_id])

    def _still_valid(self, token: Token):
        if token.revoked_at is not None:
            raise Unauthenticated(f"token {token.token_id} was revoked; ask an admin for a new one (`ember token new`)")
        if token.expires_at is not None and self.clock() >= token.expires_at:
            raise Unauthenticated(f"token {token.token_id} expired at {time.ctime(token.expires_at)}; "
                                  "make a new one with `ember token new`")

    def _verify(self, token_id: str, secret: str) -> Principal:
        live = self.containers.get(token_id)
        if live is not None:
            if hmac.compare_digest(live[0], digest(secret)):
                return Principal(CONTAINER, live[1], token_id)
            raise Unauthenticated(f"the credential of container {token_id} is not valid")
        token = self.tokens.get(token_id)
        # One answer for an unknown id and a wrong secret: neither says which ids exist.
        if token is None or not hmac.compare_digest(token.secret_hash, digest(secret)):
            raise Unauthenticated(f"token {token_id} is not valid (unknown id or wrong secret): {HOW_TO_GET_ONE}")
        self._still_valid(token)
        return Principal(token.role, token.workspace, token_id)

    # ---- workspaces (admin only)

    def create_workspace(self, who: Principal, name: str) -> Workspace:
        self.require_admin(who, "create workspaces")
        if not WORKSPACE_NAME.fullmatch(name):
            raise ValueError(f"workspace name {name!r}: use 1 to 63 lowercase letters, digits and '-', "
                             "starting with a letter or digit")
        if name in self.workspaces:
            raise ValueError(f"a workspace named {name!r} exists already")
        self.store.create_workspace(name)
        ws = self.workspaces[name] = Workspace(name, self.clock())
        return ws

    def list_workspaces(self, who: Principal) -> list[Workspace]:
        self.require_admin(who, "list workspaces")
        return sorted(self.workspaces.values(), key=lambda w: w.name)

    def set_limits(self, who: Principal, name: str, **limits) -> Workspace:
        """Set the quotas given (a value of 0 or less removes that quota)."""
        self.require_admin(who, "set quotas")
        ws = self._workspace(name)
        for key, value in limits.items():
            if value is not None:
                setattr(ws, key, value if value > 0 else None)
        self.store.set_workspace_limits(name, ws.max_containers, ws.max_cpu, ws.max_memory_mb, ws.max_gpus)
        return ws

    def workspace(self, name: str) -> Workspace | None:
        return self.workspaces.get(name)

    def _workspace(self, name: str) -> Workspace:
        ws = self.workspaces.get(name)
        if ws is None:
            raise LookupError(f"there is no workspace {name!r} (see `ember workspace list`)")
        return ws

    # ---- tokens

    def new_token(self, who: Principal, *, role: str, workspace: str = "", name: str = "",
                  expires_in: float = 0, max_cpu: float = 0, max_memory_mb: int = 0) -> tuple[Token, str]:
        """A new token and its secret (shown once). An admin makes any; a workspace token only
        workspace tokens of its own workspace; a container none."""
        self._person(who)
        if role in (ADMIN, WORKER):
            self.require_admin(who, f"make {role} tokens")
        elif role != WORKSPACE:
            raise ValueError(f"unknown token role {role!r}")
        if role == WORKER:
            workspace = ""
        else:
            workspace = workspace or who.workspace
            if not who.is_admin and workspace != who.workspace:
                raise Forbidden("a workspace token makes tokens of its own workspace only")
            self._workspace(workspace)
        if expires_in < 0 or max_cpu < 0 or max_memory_mb < 0:
            raise ValueError("a token's expiry and limits must be positive (0: none)")
        secret = secrets.token_urlsafe(32)
        token = Token(new_id("tk"), digest(secret), role, workspace, name, self.clock(),
                      expires_at=self.clock() + expires_in if expires_in else None,
                      max_cpu=max_cpu or None, max_memory_mb=max_memory_mb or None)
        self.tokens[token.token_id] = token
        self.store.add_token(token.row())
        return token, secret

    def list_tokens(self, who: Principal) -> list[Token]:
        """An admin sees every token; a workspace token, those of its workspace."""
        self._person(who)
        return [t for t in self.tokens.values() if who.is_admin or (t.workspace == who.workspace and t.role != ADMIN)]

    def revoke(self, who: Principal, token_id: str):
        token = self.tokens.get(token_id)
        if token is None or token not in self.list_tokens(who):
            raise LookupError(f"there is no token {token_id!r} (see `ember token list`)")
        if token.revoked_at is None:
            token.revoked_at = self.clock()
            self.store.revoke_token(token_id, token.revoked_at)

    def require_admin(self, who: Principal, what: str):
        if not who.is_admin:
            raise Forbidden(f"only an admin token may {what}")

    def _person(self, who: Principal):
        if who.role not in (ADMIN, WORKSPACE):
            raise Forbidden(f"a {who.role} credential cannot manage tokens")

    # ---- containers

    def container_credential(self, container_id: str, workspace: str) -> tuple[str, str]:
        """A new container's secret and its hash (for the store): valid until forget_container."""
        secret = secrets.token_urlsafe(32)
        self.containers[container_id] = (digest(secret), workspace)
        return secret, self.containers[container_id][0]

    def restore_container(self, container_id: str, secret_hash: str, workspace: str):
        """After a restart: a container that was live may reconnect with its credential."""
        if secret_hash:
            self.containers[container_id] = (secret_hash, workspace)

    def forget_container(self, container_id: str):
        self.containers.pop(container_id, None)

    # ---- the first start

    def bootstrap(self, data_dir: pathlib.Path) -> list[pathlib.Path]:
        """On a control plane's first start: an admin token of workspace `main`, and a worker
        token, each written to a file in the data dir (mode 0600). Returns the files written."""
        written = []
        root = Principal(ADMIN, MAIN, "")
        for role, filename in ((ADMIN, "admin-token.json"), (WORKER, "worker-token.json")):
            if any(t.role == role for t in self.tokens.values()):
                continue
            token, secret = self.new_token(root, role=role, workspace=MAIN, name=f"first {role} token")
            write_token_file(data_dir / filename, token.token_id, secret)
            written.append(data_dir / filename)
        return written


def write_token_file(path: pathlib.Path, token_id: str, secret: str):
    """A token as JSON (token_id, token_secret), readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"token_id": token_id, "token_secret": secret}, f)
        f.write("\n")
    os.replace(tmp, path)
