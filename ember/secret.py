"""ember.Secret: environment variables for a function's containers, kept encrypted by the
control plane.

    @app.function(secrets=[ember.Secret.from_name("openai", required_keys=["OPENAI_API_KEY"])])
    def f(): os.environ["OPENAI_API_KEY"]

Named secrets are made with `ember secret create NAME KEY=VALUE ...`; `from_dict`,
`from_dotenv` and `from_local_environ` make anonymous ones from what the caller has.
"""

import builtins
import os
import pathlib
import re

from . import config, exception, types
from ._client.bridge import twin
from ._client.client import Client
from ._object import _check_client
from .proto import api_pb2


async def _listing() -> list[api_pb2.SecretInfo]:
    return list((await Client.from_env().rpc("SecretList", api_pb2.Empty())).secrets)


class SecretManager:
    """`Secret.objects`: the workspace's named secrets, as Modal's manager has them."""

    def _loop(self):
        return Client.from_env().bridge

    def __repr__(self):
        return "<ember.Secret.objects>"

    @twin
    async def create(self, name: str, env_dict: dict[str, str], *, allow_existing: bool = False,
                     environment_name: str | None = None, client=None) -> None:
        """Create a named secret; an error if it exists, unless allow_existing (which then
        leaves it as it is: `ember secret create --force` replaces one)."""
        what = f"Secret.objects.create({name!r})"
        config.check_environment(environment_name, what)
        _check_client(client, what)
        env = Secret.from_dict(env_dict)._env
        if any(s.name == name for s in await _listing()):
            if allow_existing:
                return
            raise exception.AlreadyExistsError(f"{what}: a secret named {name!r} exists already "
                                               "(pass allow_existing=True to keep it)")
        await Client.from_env().rpc("SecretCreate", api_pb2.SecretCreateRequest(name=name, env=env), what=what)

    @twin
    async def list(self, *, max_objects: int | None = None, created_before=None, environment_name: str = "",
                   client=None) -> builtins.list["Secret"]:
        """The named secrets, newest first (handles: their values stay on the control plane)."""
        what = "Secret.objects.list()"
        config.check_environment(environment_name, what)
        _check_client(client, what)
        if max_objects is not None and (not isinstance(max_objects, int) or max_objects < 0):
            raise exception.InvalidError(f"{what}: max_objects={max_objects!r}: pass a count, 0 or more")
        before = types.created_before(created_before, what)
        found = sorted(await _listing(), key=lambda s: -s.created_at)
        secrets = [Secret(name=s.name) for s in found if before is None or s.created_at < before]
        return secrets[:max_objects] if max_objects is not None else secrets

    @twin
    async def delete(self, name: str, *, allow_missing: bool = False, environment_name: str | None = None,
                     client=None):
        what = f"Secret.objects.delete({name!r})"
        config.check_environment(environment_name, what)
        _check_client(client, what)
        try:
            await Client.from_env().rpc("SecretDelete", api_pb2.SecretRef(name=name), what=what)
        except exception.NotFoundError:
            if not allow_missing:
                raise


class Secret:
    objects = SecretManager()

    def __init__(self, *, name: str | None = None, env: dict[str, str] | None = None, required_keys=(),
                 secret_id: str | None = None):
        self._name = name
        self._env = env
        self._required = list(required_keys)
        self._secret_id = secret_id

    @property
    def name(self) -> str | None:
        """The secret's name; None for one made from values (from_dict, from_dotenv, ...)."""
        return self._name

    def _loop(self):
        return Client.from_env().bridge

    @staticmethod
    def from_id(secret_id: str) -> "Secret":
        """The secret with this id, of this workspace (checked when an app that uses it starts)."""
        if not isinstance(secret_id, str) or not re.fullmatch(r"st-[0-9a-f]{1,64}", secret_id):
            raise exception.InvalidError(f"Secret.from_id({secret_id!r}): a secret's id looks like 'st-' and "
                                         "hex digits")
        return Secret(secret_id=secret_id)

    @twin
    async def info(self) -> types.SecretInfo:
        """Its name and when it was created (never its values)."""
        if self._name is not None:
            for s in await _listing():
                if s.name == self._name:
                    return types.SecretInfo(name=s.name, environment_name="",
                                            created_at=types.timestamp(s.created_at), created_by=None, last_used=None)
            raise exception.NotFoundError(f"there is no secret named {self._name!r}")
        return types.SecretInfo(name=None, environment_name="", created_at=None, created_by=None, last_used=None)

    @twin
    async def update(self, env_dict: dict[str, str]) -> None:
        """Add or overwrite keys of this named secret, as dict.update() does: the keys not in
        env_dict keep their values. Containers started from now on see the new values."""
        what = f"Secret.update() of {self!r}"
        if not (isinstance(env_dict, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in env_dict.items())):
            raise exception.InvalidError(f"{what}: pass a dict of strings to strings")
        if self._name is None:
            raise exception.InvalidError(f"{what}: only a named secret (Secret.from_name) can be updated; "
                                         "one made from values (from_dict, from_dotenv, ...) is made anew instead")
        await Client.from_env().rpc("SecretCreate", api_pb2.SecretCreateRequest(
            name=self._name, env=env_dict, merge=True), what=what)

    def __repr__(self):  # never the values
        return f"<ember.Secret {self._name or self._secret_id or f'({len(self._env or {})} variables)'}>"

    @staticmethod
    def from_name(name: str, *, required_keys: list[str] = (), environment_name: str | None = None) -> "Secret":
        config.check_environment(environment_name, f"Secret.from_name({name!r})")
        if not isinstance(name, str) or not name:
            raise exception.InvalidError(f"Secret.from_name({name!r}): pass the secret's name")
        if isinstance(required_keys, str) or not all(isinstance(k, str) for k in required_keys):
            raise exception.InvalidError(f"required_keys={required_keys!r}: pass a list of variable names")
        return Secret(name=name, required_keys=required_keys)

    @staticmethod
    def from_dict(env_dict: dict[str, str | None]) -> "Secret":
        if not isinstance(env_dict, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                     for k, v in env_dict.items()):
            raise exception.InvalidError("Secret.from_dict: pass a dict of string names to string values")
        return Secret(env={k: v for k, v in env_dict.items() if v is not None})

    @staticmethod
    def from_local_environ(env_keys: list[str]) -> "Secret":
        missing = [k for k in env_keys if k not in os.environ]
        if missing:
            raise exception.InvalidError(f"Secret.from_local_environ: {', '.join(missing)} not set in this environment")
        return Secret(env={k: os.environ[k] for k in env_keys})

    @staticmethod
    def from_dotenv(path=None, *, filename: str = ".env") -> "Secret":
        """The variables of a .env file: `path` is the file or its directory (default: here)."""
        p = pathlib.Path(path) if path is not None else pathlib.Path.cwd()
        if p.is_dir():
            p = p / filename
        try:
            text = p.read_text()
        except OSError as e:
            raise exception.InvalidError(f"Secret.from_dotenv: cannot read {p}: {e.strerror}") from None
        return Secret(env=parse_dotenv(text))

    async def _resolve(self, client: Client) -> str:
        """The secret's id on the control plane, at each app start: looked up by name (it may
        have changed since), or created from the values."""
        if self._secret_id is not None:
            return self._secret_id
        if self._name is not None:
            ref = await client.rpc("SecretLookup", api_pb2.SecretLookupRequest(
                name=self._name, required_keys=self._required), what=f"secret {self._name}")
        else:
            ref = await client.rpc("SecretCreate", api_pb2.SecretCreateRequest(env=self._env))
        return ref.secret_id


def parse_dotenv(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        env[key.strip()] = value
    return env
